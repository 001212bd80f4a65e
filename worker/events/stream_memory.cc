#include "worker/events/stream_memory.h"

#include <cstdlib>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace compress {

void ConfigureMallocForStreaming() {
#if defined(__GLIBC__)
  // The threshold first: setting either turns glibc's dynamic threshold off, and with only the
  // trim threshold set every 1 MiB buffer would be mapped (slower than the defaults).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

}  // namespace compress
