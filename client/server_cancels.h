// The bound on retries of file transfers that compressd cancelled, shared by compressctl
// (download) and compress-worker (artifact uploads, blob reads).
#ifndef COMPRESS_CLIENT_SERVER_CANCELS_H_
#define COMPRESS_CLIENT_SERVER_CANCELS_H_

namespace compress::client {

// How many tries of one file transfer compressd may cancel before the client gives up on it.
// compressd cancels a transfer that moved nothing for its --file_stream_idle_timeout (5 minutes
// by default), longer than a retry window counted from the transfer's start, so each such cancel
// opens the window afresh; this bound keeps the retries finite. The Python client's
// _MAX_SERVER_CANCELS (client/python/compressd_client/client.py) holds the same value.
inline constexpr int kMaxServerCancels = 3;

}  // namespace compress::client

#endif  // COMPRESS_CLIENT_SERVER_CANCELS_H_
