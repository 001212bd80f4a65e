// MetricsInterceptorFactory: the go-grpc-prometheus server metrics (grpc_server_started_total,
// grpc_server_handled_total, grpc_server_msg_received_total, grpc_server_msg_sent_total,
// grpc_server_handling_seconds) through a gRPC server interceptor.
//
//   builder.experimental().SetInterceptorCreators(...MetricsInterceptorFactory...)
#ifndef COMPRESS_SERVER_RPC_METRICS_INTERCEPTOR_H_
#define COMPRESS_SERVER_RPC_METRICS_INTERCEPTOR_H_

#include <grpcpp/support/server_interceptor.h>

#include <set>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "server/core/metrics.h"

namespace compress::server {

// One method a server serves.
struct GrpcMethodInfo {
  // The full service name, e.g. "compress.v1.WorkerService".
  std::string service;
  // The method's name, e.g. "LeaseJob".
  std::string method;
  // unary, client_stream, server_stream or bidi_stream.
  std::string type;
};

// The methods of a protobuf service, with their types.
std::vector<GrpcMethodInfo> MethodsOf(const google::protobuf::ServiceDescriptor& service);

// The grpc_type label of an RPC type: unary, client_stream, server_stream or bidi_stream.
const char* GrpcTypeName(grpc::experimental::ServerRpcInfo::Type type);

// Creates one interceptor per call of a known method. Calls of other method paths (which the
// server answers UNIMPLEMENTED) are not counted, so that clients cannot create series without
// bound. Thread-safe.
class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // Counts calls of `methods`, whose series are created at once (at 0). `metrics` is not owned
  // and must outlive the server.
  MetricsInterceptorFactory(Metrics* metrics, const std::vector<GrpcMethodInfo>& methods);

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  // Constant after construction.
  Metrics* const metrics_;
  // "/service/method" of each known method.
  std::set<std::string> paths_;
};

}  // namespace compress::server

#endif  // COMPRESS_SERVER_RPC_METRICS_INTERCEPTOR_H_
