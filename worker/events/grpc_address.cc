#include "worker/events/grpc_address.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace compress {

absl::Status CheckGrpcAddress(absl::string_view flag, absl::string_view address,
                              bool allow_unix_socket) {
  const std::string expected =
      allow_unix_socket ? "HOST:PORT, [IPV6]:PORT or unix:PATH" : "HOST:PORT or [IPV6]:PORT";
  const auto malformed = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": expected ", expected, ", got '", address, "'"));
  };
  if (address.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": empty address"));
  for (absl::string_view scheme : {"unix:", "unix-abstract:"}) {
    if (absl::StartsWith(address, scheme)) {
      if (allow_unix_socket && address.size() > scheme.size()) return absl::OkStatus();
      return malformed();
    }
  }
  absl::string_view host_port = address;
  if (absl::ConsumePrefix(&host_port, "dns:") && absl::ConsumePrefix(&host_port, "//")) {
    // dns://AUTHORITY/HOST:PORT
    const size_t slash = host_port.find('/');
    host_port = slash == absl::string_view::npos ? "" : host_port.substr(slash + 1);
  }
  const size_t colon = host_port.rfind(':');
  const absl::string_view host =
      colon == absl::string_view::npos ? host_port : host_port.substr(0, colon);
  const bool bracketed =
      host.size() > 2 && absl::StartsWith(host, "[") && absl::EndsWith(host, "]");
  if (colon == absl::string_view::npos || host.empty() ||
      (!bracketed && host.find_first_of("[]:/") != absl::string_view::npos)) {
    return malformed();
  }
  const absl::string_view port = host_port.substr(colon + 1);
  bool digits = !port.empty();
  for (char c : port) digits = digits && absl::ascii_isdigit(static_cast<unsigned char>(c));
  int value = 0;
  if (!digits || !absl::SimpleAtoi(port, &value) || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": the port must be a number in [0, 65535], got '", port, "' in '", address, "'"));
  }
  return absl::OkStatus();
}

}  // namespace compress
