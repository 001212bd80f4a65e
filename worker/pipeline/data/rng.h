// A small deterministic random number generator (SplitMix64, Steele, Lea and Flood, "Fast
// splittable pseudorandom number generators", OOPSLA 2014). Used instead of <random>'s
// distributions, whose outputs differ between standard libraries, so that synthetic data,
// shuffling and augmentation are identical for a given seed everywhere.
#ifndef COMPRESS_WORKER_PIPELINE_DATA_RNG_H_
#define COMPRESS_WORKER_PIPELINE_DATA_RNG_H_

#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace compress::pipeline {

// Not thread-safe; one instance per thread or per task.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  // Seed derived from several values (e.g. seed, epoch, batch index).
  static uint64_t Mix(std::initializer_list<uint64_t> values) {
    SplitMix64 rng(0x6a09e667f3bcc909ULL);
    uint64_t h = rng.Next();
    for (uint64_t v : values) {
      rng.state_ ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
      h = rng.Next();
    }
    return h;
  }

  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(Next() >> 11) * (1.0 / 9007199254740992.0); }

  // Uniform in [lo, hi).
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }

  // Uniform integer in [0, n); n > 0.
  uint64_t Below(uint64_t n) { return Next() % n; }

  // Standard normal (Box-Muller).
  double Normal() {
    const double u1 = 1.0 - Uniform();  // (0, 1]
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t state_;
};

}  // namespace compress::pipeline

#endif  // COMPRESS_WORKER_PIPELINE_DATA_RNG_H_
