"""optref.py: a few of OPTIMIZERS.md's update rules in Python doubles, so
tests can say what a float64 session must answer without trusting the
daemon (tolerance: OPTIMIZERS.md's 1e-10*|want| + 1e-12)."""

import math
import struct


def close64(got, want):
    return abs(got - want) <= 1e-10 * abs(want) + 1e-12


def close32(got, want):
    return abs(got - want) <= 2e-5 * abs(want) + 1e-6


def f32(x):
    """x rounded to float32 (and back to a Python float)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def pack(values, dtype):
    return struct.pack("<%d%s" % (len(values), "d" if dtype == "float64" else "f"), *values)


def unpack(data, dtype):
    w = 8 if dtype == "float64" else 4
    assert len(data) % w == 0, len(data)
    return list(struct.unpack("<%d%s" % (len(data) // w, "d" if dtype == "float64" else "f"), data))


class Adam:
    """adam (weight_decay 0, no amsgrad) in double; lr may change between steps."""

    def __init__(self, p, lr=0.001, betas=(0.9, 0.999), eps=1e-8):
        self.p = list(p)
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = [0.0] * len(p)
        self.v = [0.0] * len(p)
        self.t = 0

    def step(self, g):
        self.t += 1
        b1, b2 = self.b1, self.b2
        bc1 = 1 - b1 ** self.t
        bc2 = 1 - b2 ** self.t
        for i, gi in enumerate(g):
            self.m[i] = b1 * self.m[i] + (1 - b1) * gi
            self.v[i] = b2 * self.v[i] + (1 - b2) * gi * gi
            denom = math.sqrt(self.v[i]) / math.sqrt(bc2) + self.eps
            self.p[i] = self.p[i] - (self.lr / bc1) * self.m[i] / denom
        return self.p


class SGD:
    def __init__(self, p, lr=0.001, momentum=0.0):
        self.p = list(p)
        self.lr, self.momentum = lr, momentum
        self.buf = None

    def step(self, g):
        g = list(g)
        if self.momentum:
            if self.buf is None:
                self.buf = list(g)
            else:
                self.buf = [self.momentum * b + gi for b, gi in zip(self.buf, g)]
            g = self.buf
        self.p = [pi - self.lr * gi for pi, gi in zip(self.p, g)]
        return self.p


def norm(g):
    return math.sqrt(sum(x * x for x in g))
