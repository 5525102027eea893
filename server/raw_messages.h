// Protobuf messages to and from the raw ByteBuffers of the ChatService methods.
//
// The ChatService methods are registered raw (services.h says why: a string field holding
// invalid UTF-8 must be INVALID_ARGUMENT, not the generated handlers' INTERNAL), so every
// request is parsed, and every response serialized, by these two helpers. Pure functions of
// their arguments; any thread.
#ifndef XLSTMD_SERVER_RAW_MESSAGES_H_
#define XLSTMD_SERVER_RAW_MESSAGES_H_

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/status.h"

namespace xlstmd::server {

// Parses `request` into `out`. An absent or empty buffer is the all-default message (zero
// bytes on the wire). INVALID_ARGUMENT naming the message type when the bytes do not parse.
template <class Message>
absl::Status ParseRequest(const grpc::ByteBuffer* request, Message* out) {
  // An all-default message is zero bytes on the wire; never hand the reader a null buffer.
  if (request == nullptr || !request->Valid()) {
    out->Clear();
    return absl::OkStatus();
  }
  // ProtoBufferReader wants a mutable buffer; the copy only takes references to the slices.
  grpc::ByteBuffer copy(*request);
  grpc::ProtoBufferReader reader(&copy);
  if (!reader.status().ok() || !out->ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request is not a valid ", out->GetTypeName(),
                     ": malformed protobuf, or a string field that is not valid UTF-8"));
  }
  return absl::OkStatus();
}

// INVALID_ARGUMENT when the wire bytes set more than one member of a oneof (`fields`, its
// field numbers): protobuf parsing keeps the last one silently, so a client that sends both
// would get a turn on an input it did not mean (RELIABILITY.md's bad-input list).
inline absl::Status CheckOneofConflict(const grpc::ByteBuffer* request,
                                       std::initializer_list<int> fields,
                                       absl::string_view oneof_name) {
  if (request == nullptr || !request->Valid()) return absl::OkStatus();
  std::vector<grpc::Slice> slices;
  if (!request->Dump(&slices).ok()) return absl::OkStatus();  // ParseRequest reports it
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  int first = 0;
  while (const uint32_t tag = in.ReadTag()) {
    const int field = static_cast<int>(google::protobuf::internal::WireFormatLite::GetTagFieldNumber(tag));
    if (std::find(fields.begin(), fields.end(), field) != fields.end()) {
      if (first != 0 && first != field) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the request sets more than one member of oneof `", oneof_name, "` (fields ", first,
            " and ", field, "); set exactly one"));
      }
      first = field;
    }
    if (!google::protobuf::internal::WireFormatLite::SkipField(&in, tag)) break;
  }
  return absl::OkStatus();
}

// Serializes `message` into `response` (replacing what it held).
template <class Message>
grpc::Status SerializeResponse(const Message& message, grpc::ByteBuffer* response) {
  response->Clear();
  bool own_buffer = false;
  return grpc::SerializationTraits<Message>::Serialize(message, response, &own_buffer);
}

}  // namespace xlstmd::server

#endif  // XLSTMD_SERVER_RAW_MESSAGES_H_
