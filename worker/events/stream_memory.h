// Allocator settings for programs that stream artifacts in 1 MiB messages (compressd,
// compress-worker, compressctl).
#ifndef COMPRESS_WORKER_EVENTS_STREAM_MEMORY_H_
#define COMPRESS_WORKER_EVENTS_STREAM_MEMORY_H_

namespace compress {

// With glibc's defaults every 1 MiB message buffer of a stream (gRPC allocates one per message)
// is either mapped and unmapped, or carved from a heap that is trimmed again right after, so
// each message pays for zeroed fresh pages. This keeps allocations below 32 MiB on the heap and
// lets up to 64 MiB of free heap stay mapped: a 1 GiB ReadArtifact on loopback ran 2-3 times
// faster (bench/results/server.md). Call once at the start of main; no effect off glibc.
void ConfigureMallocForStreaming();

}  // namespace compress

#endif  // COMPRESS_WORKER_EVENTS_STREAM_MEMORY_H_
