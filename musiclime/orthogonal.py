"""Folded orthogonal arrays: the Hadamard matrices and randomized blocks the orthogonal
designs of :mod:`musiclime.designs` are built from."""
from __future__ import annotations

from functools import cache

import numpy as np

from musiclime.masks import seed_bits

# ---------------------------------------------------------------------- Hadamard matrices

def _is_prime(q: int) -> bool:
    return q > 1 and all(q % d for d in range(2, int(q ** 0.5) + 1))


@cache
def hadamard_order(at_least: int) -> int:
    """The smallest Hadamard order >= ``at_least`` that :func:`hadamard` builds: 1, 2, and
    (q + 1) * 2^k for primes q = 3 mod 4 (Paley I with Sylvester doubling)."""
    n = max(1, int(at_least))
    while True:
        if n in (1, 2):
            return n
        m = n
        while m % 2 == 0 and m > 4:
            if _is_prime(m - 1) and (m - 1) % 4 == 3:
                return n
            m //= 2
        if (_is_prime(m - 1) and (m - 1) % 4 == 3) or m in (1, 2, 4):
            return n
        n += 1


@cache
def hadamard(order: int) -> np.ndarray:
    """A normalized Hadamard matrix ``int8 [order, order]`` (``H @ H.T == order * I``, first
    column all +1) of an order :func:`hadamard_order` returns."""
    if order in (1, 2):
        h = np.array([[1]], dtype=np.int64) if order == 1 else np.array([[1, 1], [1, -1]])
    elif order % 2 == 0 and _is_prime(order - 1) and (order - 1) % 4 == 3:
        q = order - 1
        squares = {(x * x) % q for x in range(1, q)}
        chi = np.array([0] + [1 if d in squares else -1 for d in range(1, q)])
        jacobsthal = chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q]
        s = np.zeros((order, order), dtype=np.int64)
        s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, jacobsthal
        h = s + np.eye(order, dtype=np.int64)
    elif order % 2 == 0 and order >= 4:
        half = hadamard(order // 2).astype(np.int64)
        h = np.block([[half, half], [half, -half]])
    else:
        raise ValueError(f"no Hadamard construction here for order {order}")
    h = h * h[:, :1]                                 # first column all +1
    if not np.array_equal(h @ h.T, order * np.eye(order, dtype=np.int64)):
        raise AssertionError(f"Hadamard construction of order {order} failed")
    return h.astype(np.int8)


def orthogonal_block(width: int, rng: np.random.Generator) -> np.ndarray:
    """One randomized folded orthogonal array: ``uint8 [2 * order, width]``.

    ``width`` columns drawn at random from a normalized Hadamard matrix of the smallest
    order > ``width`` (its first, constant column dropped), each flipped at random, rows
    shuffled, then every row followed by its complement. Every column is balanced, every
    pair of columns orthogonal (+-1 coding), and a mask and its complement cancel every
    even-order interaction (resolution IV).
    """
    if width == 0:
        return np.ones((2, 0), dtype=np.uint8)
    order = hadamard_order(width + 1)
    h = hadamard(order)[:, 1:]
    cols = rng.permutation(order - 1)[:width]
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=width)
    block = (h[rng.permutation(order)][:, cols] * signs) > 0
    out = np.empty((2 * order, width), dtype=np.uint8)
    out[0::2], out[1::2] = block, ~block
    return out


def orthogonal_masks(blocks: float, width: int, seed: int, stream: int = 0) -> np.ndarray:
    """``uint8 [orthogonal_rows(blocks, width), width]``: the all-ones row and its
    complement (row 0 keeps the whole input), then ``int(blocks)`` independently randomized
    :func:`orthogonal_block` s, then, for a fractional ``blocks``, the first
    :func:`split_blocks` pairs of the next one (its rows are shuffled: a random subset,
    balanced pair by pair, orthogonal only on average). Block ``b`` depends only on
    (seed, stream, b), so a design of more blocks extends one of fewer."""
    whole, pairs = split_blocks(blocks, width)
    rows = [np.ones((1, width), np.uint8), np.zeros((1, width), np.uint8)]
    for b in range(whole + (pairs > 0)):
        block = orthogonal_block(width, np.random.default_rng([seed_bits(seed), 11, stream, b]))
        rows.append(block if b < whole else block[:2 * pairs])
    return np.concatenate(rows)


def split_blocks(blocks: float, width: int) -> tuple[int, int]:
    """(whole blocks, mask pairs of the next block) of a possibly fractional ``blocks``: the
    fraction of the next block's ``order`` pairs, rounded down."""
    # fractions are k / order of some order below 10^4: an integer k * order / order' is at
    # least 1e-4 from the next, so 1e-6 absorbs float error only
    whole = int(np.floor(blocks + 1e-6))
    order = hadamard_order(width + 1) if width else 1
    return whole, min(order - 1, max(0, int(np.floor((blocks - whole) * order + 1e-6))))


def orthogonal_rows(blocks: float, width: int) -> int:
    """Rows of :func:`orthogonal_masks`."""
    whole, pairs = split_blocks(blocks, width)
    return 2 + whole * orthogonal_block_rows(width) + 2 * pairs


def orthogonal_block_rows(width: int) -> int:
    return 2 * hadamard_order(width + 1) if width else 2
