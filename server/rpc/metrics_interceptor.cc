#include "server/rpc/metrics_interceptor.h"

#include <grpcpp/support/status.h>

#include <atomic>
#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"

namespace compress::server {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

// One call: started when created, handled when the status is sent (or, for a call that ends
// without one, as Canceled when the call is destroyed).
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit MetricsInterceptor(GrpcMethodMetrics* metrics)
      : metrics_(metrics), start_(std::chrono::steady_clock::now()) {
    metrics_->Started();
  }

  ~MetricsInterceptor() override {
    if (!handled_.exchange(true)) {
      metrics_->Handled(Metrics::GrpcCodeName(grpc::StatusCode::CANCELLED), Seconds());
    }
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    // A failed read (the end of the client's stream) has no message.
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {
      metrics_->MessageReceived();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      metrics_->MessageSent();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) &&
        !handled_.exchange(true)) {
      metrics_->Handled(Metrics::GrpcCodeName(methods->GetSendStatus().error_code()), Seconds());
    }
    methods->Proceed();
  }

 private:
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

  GrpcMethodMetrics* const metrics_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<bool> handled_{false};
};

// "/pkg.Service/Method" -> ("pkg.Service", "Method"); false for another shape.
bool SplitPath(const std::string& path, std::string* service, std::string* method) {
  if (path.size() < 4 || path[0] != '/') return false;
  size_t slash = path.find('/', 1);
  if (slash == std::string::npos || slash == 1 || slash + 1 == path.size()) return false;
  *service = path.substr(1, slash - 1);
  *method = path.substr(slash + 1);
  return true;
}

}  // namespace

std::vector<GrpcMethodInfo> MethodsOf(const google::protobuf::ServiceDescriptor& service) {
  std::vector<GrpcMethodInfo> methods;
  for (int i = 0; i < service.method_count(); ++i) {
    const google::protobuf::MethodDescriptor& m = *service.method(i);
    const char* type = m.client_streaming()
                           ? (m.server_streaming() ? "bidi_stream" : "client_stream")
                           : (m.server_streaming() ? "server_stream" : "unary");
    methods.push_back({service.full_name(), m.name(), type});
  }
  return methods;
}

const char* GrpcTypeName(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY:
      return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING:
      return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING:
      return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unary";
}

MetricsInterceptorFactory::MetricsInterceptorFactory(Metrics* metrics,
                                                     const std::vector<GrpcMethodInfo>& methods)
    : metrics_(metrics) {
  for (const GrpcMethodInfo& m : methods) {
    paths_.insert(absl::StrCat("/", m.service, "/", m.method));
    metrics_->GrpcMethod(m.type, m.service, m.method);
  }
}

grpc::experimental::Interceptor* MetricsInterceptorFactory::CreateServerInterceptor(
    ServerRpcInfo* info) {
  const std::string path = info->method() == nullptr ? "" : info->method();
  std::string service, method;
  if (paths_.count(path) == 0 || !SplitPath(path, &service, &method)) return nullptr;
  return new MetricsInterceptor(metrics_->GrpcMethod(GrpcTypeName(info->type()), service, method));
}

}  // namespace compress::server
