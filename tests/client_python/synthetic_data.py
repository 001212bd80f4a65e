"""A bit-exact Python port of the executor's synthetic data set
(worker/pipeline/data/synthetic_dataset.cc with SplitMix64 of worker/pipeline/data/rng.h)."""

import math
import struct

_PI = 3.14159265358979323846

_MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & _MASK

    @staticmethod
    def mix(values):
        rng = SplitMix64(0x6A09E667F3BCC909)
        h = rng.next()
        for v in values:
            rng.state ^= (v + 0x9E3779B97F4A7C15 + ((h << 6) & _MASK) + (h >> 2)) & _MASK
            h = rng.next()
        return h

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def uniform(self, lo=None, hi=None):
        u = float(self.next() >> 11) * (1.0 / 9007199254740992.0)
        return u if lo is None else lo + (hi - lo) * u

    def below(self, n):
        return self.next() % n

    def normal(self):
        u1 = 1.0 - self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)


def _to_float32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _lround(value):
    """C's lround: halves away from zero."""
    magnitude = abs(value)
    floor = math.floor(magnitude)
    rounded = floor + 1 if magnitude - floor >= 0.5 else floor
    return int(rounded) if value >= 0 else -int(rounded)


def _clamp(value, lo, hi):
    return lo if value < lo else hi if value > hi else value


def _prototypes(num_classes, channels, size, seed):
    """Class patterns in [-1, 1] (float32 values), [class][channel][y * size + x]."""
    rng = SplitMix64(SplitMix64.mix([seed, 0x70726F746F]))
    protos = []
    for c in range(num_classes):
        angle = _PI * (c + rng.uniform(0.0, 0.5)) / num_classes
        freq = rng.uniform(1.5, 4.0) * 2.0 * _PI / size
        blob_y = rng.uniform(0.25, 0.75) * size
        blob_x = rng.uniform(0.25, 0.75) * size
        blob_r = rng.uniform(0.12, 0.25) * size
        per_channel = []
        for _ in range(channels):
            phase = rng.uniform(0.0, 2.0 * _PI)
            grating_gain = rng.uniform(0.4, 0.8)
            blob_gain = rng.uniform(-0.6, 0.6)
            plane = []
            for y in range(size):
                for x in range(size):
                    t = (x * math.cos(angle) + y * math.sin(angle)) * freq + phase
                    dy = y - blob_y
                    dx = x - blob_x
                    blob = math.exp(-(dx * dx + dy * dy) / (2.0 * blob_r * blob_r))
                    plane.append(_to_float32(
                        _clamp(grating_gain * math.sin(t) + blob_gain * blob, -1.0, 1.0)))
            per_channel.append(plane)
        protos.append(per_channel)
    return protos


def make_split(num_classes, channels, size, count, seed, stream, noise_stddev=24.0):
    """(pixels, labels): pixels a list of `count` images, each [channel][y * size + x] of uint8
    values; stream 1 is the training split, 2 the validation split."""
    protos = _prototypes(num_classes, channels, size, seed)
    rng = SplitMix64(SplitMix64.mix([seed, stream]))
    max_shift = max(1, size // 10)
    images, labels = [], []
    for i in range(count):
        label = i % num_classes
        labels.append(label)
        shift_y = rng.below(2 * max_shift + 1) - max_shift
        shift_x = rng.below(2 * max_shift + 1) - max_shift
        contrast = rng.uniform(0.7, 1.3)
        brightness = rng.uniform(-20.0, 20.0)
        image = []
        for ch in range(channels):
            proto = protos[label][ch]
            plane = []
            for y in range(size):
                sy = (y + shift_y) % size
                for x in range(size):
                    sx = (x + shift_x) % size
                    v = (128.0 + brightness + 90.0 * contrast * proto[sy * size + sx]
                         + noise_stddev * rng.normal())
                    plane.append(_clamp(_lround(v), 0, 255))
            image.append(plane)
        images.append(image)
    return images, labels
