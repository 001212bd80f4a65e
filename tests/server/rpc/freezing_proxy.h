// FreezingProxy: a loopback TCP proxy that can stop forwarding while keeping its connections open,
// as a peer does that vanished without closing them (a machine that lost power, a cable pulled).
#ifndef COMPRESS_TESTS_SERVER_RPC_FREEZING_PROXY_H_
#define COMPRESS_TESTS_SERVER_RPC_FREEZING_PROXY_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <utility>
#include <vector>

namespace compress::server {

class FreezingProxy {
 public:
  // Listens on 127.0.0.1 (port()) and forwards every connection to 127.0.0.1:target_port.
  explicit FreezingProxy(int target_port) : target_port_(target_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address));
    listen(listen_fd_, 16);
    socklen_t length = sizeof(address);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~FreezingProxy() {
    stop_ = true;
    thread_.join();
    for (const Pair& pair : pairs_) {
      close(pair.client);
      close(pair.server);
    }
    close(listen_fd_);
  }

  int port() const { return port_; }
  // From now on nothing is forwarded either way; the connections stay open.
  void Freeze() { frozen_ = true; }

 private:
  void Run() {
    while (!stop_) {
      // Each entry after the first: a pair's index, and whether it reads the client side.
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}};
      std::vector<std::pair<size_t, bool>> sources;
      if (!frozen_) {
        for (size_t p = 0; p < pairs_.size(); ++p) {
          if (pairs_[p].client_open) {
            fds.push_back({pairs_[p].client, POLLIN, 0});
            sources.emplace_back(p, true);
          }
          if (pairs_[p].server_open) {
            fds.push_back({pairs_[p].server, POLLIN, 0});
            sources.emplace_back(p, false);
          }
        }
      }
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) Accept();
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        Pair& pair = pairs_[sources[i - 1].first];
        const bool from_client = sources[i - 1].second;
        const int from = fds[i].fd;
        const int to = from_client ? pair.server : pair.client;
        char buffer[65536];
        ssize_t n = read(from, buffer, sizeof(buffer));
        if (n <= 0) {
          shutdown(to, SHUT_WR);
          (from_client ? pair.client_open : pair.server_open) = false;
          continue;
        }
        for (ssize_t sent = 0; sent < n;) {
          ssize_t w = write(to, buffer + sent, n - sent);
          if (w <= 0) break;
          sent += w;
        }
      }
    }
  }

  void Accept() {
    int client = accept(listen_fd_, nullptr, nullptr);
    if (client < 0) return;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (connect(server, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      close(client);
      close(server);
      return;
    }
    pairs_.push_back(Pair{client, server});
  }

  const int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> frozen_{false};
  struct Pair {
    int client;
    int server;
    bool client_open = true;  // still reading from it
    bool server_open = true;
  };
  std::vector<Pair> pairs_;  // touched by Run only
  std::thread thread_;
};

}  // namespace compress::server

#endif  // COMPRESS_TESTS_SERVER_RPC_FREEZING_PROXY_H_
