// Package api holds cairn's wire definitions: the .proto files and the Go
// code generated from them. It has no code of its own.
//
//   - etcdserverpb: etcd's v3 client API (services KV, Watch, Lease, Cluster,
//     Maintenance, Auth), their messages, the gRPC stubs (rpc_grpc.pb.go) and
//     the HTTP/JSON gateway handlers for the /v3/... paths (rpc.pb.gw.go).
//   - mvccpb: KeyValue and Event, shared by the keyspace and the watch stream.
//   - authpb: User, Permission and Role of the auth store.
//   - cairnpb: cairn's own log-entry envelope (Request), the form in which a
//     write is stored in the raft log.
//   - third_party/google/api: annotations.proto and http.proto, vendored so
//     protoc can read the google.api.http options (see its README.md).
//
// Package names, service and method names, message names, field names,
// field numbers, types, enums and enum values in etcdserverpb, mvccpb and
// authpb are etcd's and must never change: etcd's clients and tools, and
// the JSON gateway's field names, depend on them. cairnpb's field numbers
// must never change either, because the raft log outlives the binaries
// that wrote it. Add fields only with new numbers.
//
// The *.pb.go and *.pb.gw.go files are generated and committed. After
// editing a .proto file, regenerate them from the repository root with
//
//	make proto
//
// which installs pinned versions of protoc-gen-go, protoc-gen-go-grpc and
// protoc-gen-grpc-gateway into bin/tools, checks for Debian's protoc
// 3.21.12, and rewrites every generated file. Running it again must leave
// the tree unchanged.
package api
