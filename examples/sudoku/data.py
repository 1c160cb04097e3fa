"""Sudoku boards and puzzles, generated locally with a fixed seed (no downloads).

A board of box size ``k`` has ``N = k*k`` rows, columns and digits; digits are 1..N and 0 marks a
blank. One-hot encoding: variable ``(r, c, d)`` (digit ``d+1`` in cell ``(r, c)``) has index
``(r*N + c)*N + d``, so a board is a vector of ``N**3`` entries (64 for 4x4, 729 for 9x9).

Solutions are random transforms of a base pattern (digit relabeling, row permutations within
bands, band permutations, the same for columns/stacks, optional transpose), which preserve
validity. Puzzles remove cells in random order; with ``unique=True`` a cell is only removed when
the puzzle keeps a unique solution (checked by a small bitmask backtracking solver), so the
target "the" solution is well defined. If no further cell can be removed, the puzzle has fewer
blanks than asked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["base_solution", "random_solution", "is_valid_solution", "count_solutions",
           "make_puzzle", "one_hot", "decode", "sudoku_constraints", "SudokuData", "make_dataset"]


def base_solution(k: int) -> np.ndarray:
    """The canonical valid board of box size k: ``(k*(r % k) + r // k + c) % N + 1``."""
    N = k * k
    r, c = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    return ((k * (r % k) + r // k + c) % N + 1).astype(np.int64)


def _band_perm(k: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of 0..N-1 that permutes bands and lines within each band."""
    bands = rng.permutation(k)
    return np.concatenate([b * k + rng.permutation(k) for b in bands])


def random_solution(k: int, rng: np.random.Generator) -> np.ndarray:
    N = k * k
    board = base_solution(k)
    board = board[_band_perm(k, rng)][:, _band_perm(k, rng)]
    if rng.random() < 0.5:
        board = board.T
    relabel = np.concatenate([[0], rng.permutation(N) + 1])
    return relabel[board]


def is_valid_solution(board: np.ndarray, k: int) -> bool:
    N = k * k
    board = np.asarray(board)
    if board.shape != (N, N):
        return False
    full = set(range(1, N + 1))
    for i in range(N):
        if set(board[i].tolist()) != full or set(board[:, i].tolist()) != full:
            return False
    for br in range(k):
        for bc in range(k):
            box = board[br * k:(br + 1) * k, bc * k:(bc + 1) * k]
            if set(box.ravel().tolist()) != full:
                return False
    return True


def count_solutions(puzzle: np.ndarray, k: int, limit: int = 2) -> int:
    """Number of completions of ``puzzle`` (0 = blank), counting up to ``limit``."""
    N = k * k
    full = (1 << (N + 1)) - 2            # bits 1..N
    rows = [0] * N
    cols = [0] * N
    boxes = [0] * N
    blanks = []
    for r in range(N):
        for c in range(N):
            d = int(puzzle[r, c])
            b = (r // k) * k + c // k
            if d:
                bit = 1 << d
                if (rows[r] | cols[c] | boxes[b]) & bit:
                    return 0
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
            else:
                blanks.append((r, c, b))
    count = 0

    def rec(todo):
        nonlocal count
        if not todo:
            count += 1
            return
        # most constrained blank first
        best, best_free, best_n = None, 0, N + 1
        for i, (r, c, b) in enumerate(todo):
            free = full & ~(rows[r] | cols[c] | boxes[b])
            nf = bin(free).count("1")
            if nf < best_n:
                best, best_free, best_n = i, free, nf
                if nf <= 1:
                    break
        if best_n == 0:
            return
        r, c, b = todo[best]
        rest = todo[:best] + todo[best + 1:]
        free = best_free
        while free and count < limit:
            bit = free & -free
            free ^= bit
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            rec(rest)
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit

    rec(blanks)
    return count


def make_puzzle(solution: np.ndarray, k: int, n_blanks: int, rng: np.random.Generator,
                unique: bool = True) -> np.ndarray:
    N = k * k
    puzzle = solution.copy()
    removed = 0
    for idx in rng.permutation(N * N):
        if removed >= n_blanks:
            break
        r, c = divmod(int(idx), N)
        keep = puzzle[r, c]
        puzzle[r, c] = 0
        if unique and count_solutions(puzzle, k, limit=2) != 1:
            puzzle[r, c] = keep
            continue
        removed += 1
    return puzzle


def one_hot(boards: np.ndarray, k: int) -> np.ndarray:
    """(..., N, N) int boards -> (..., N**3) float one-hot vectors (blank cells are all zero)."""
    N = k * k
    boards = np.asarray(boards)
    out = np.zeros(boards.shape + (N,), dtype=np.float64)
    digits = np.arange(1, N + 1)
    out[...] = boards[..., None] == digits
    return out.reshape(boards.shape[:-2] + (N ** 3,))


def decode(x: np.ndarray, k: int) -> np.ndarray:
    """(..., N**3) scores -> (..., N, N) boards by argmax per cell."""
    N = k * k
    x = np.asarray(x)
    return x.reshape(x.shape[:-1] + (N, N, N)).argmax(-1) + 1


def sudoku_constraints(k: int) -> np.ndarray:
    """The true Sudoku constraint matrix (4 N^2 x N^3, entries 0/1): each cell has one digit and
    each row / column / box has each digit once. Its rank is the natural number of rows of the
    learned A (40 for 4x4, as in OptNet; 249 for 9x9)."""
    N = k * k
    n = N ** 3
    rows = []

    def var(r, c, d):
        return (r * N + c) * N + d

    for r in range(N):
        for c in range(N):
            rows.append([var(r, c, d) for d in range(N)])
    for d in range(N):
        for r in range(N):
            rows.append([var(r, c, d) for c in range(N)])
        for c in range(N):
            rows.append([var(r, c, d) for r in range(N)])
        for br in range(k):
            for bc in range(k):
                rows.append([var(br * k + i, bc * k + j, d) for i in range(k) for j in range(k)])
    A = np.zeros((len(rows), n))
    for i, idx in enumerate(rows):
        A[i, idx] = 1.0
    return A


@dataclass
class SudokuData:
    k: int
    puzzles: np.ndarray      # (B, N, N) int, 0 = blank
    solutions: np.ndarray    # (B, N, N) int

    @property
    def X(self) -> np.ndarray:   # one-hot puzzles (B, N**3)
        return one_hot(self.puzzles, self.k)

    @property
    def Y(self) -> np.ndarray:   # one-hot solutions (B, N**3)
        return one_hot(self.solutions, self.k)

    def __len__(self):
        return len(self.puzzles)

    def subset(self, idx):
        return SudokuData(self.k, self.puzzles[idx], self.solutions[idx])


def default_blanks(k: int) -> int:
    return {2: 8, 3: 40}.get(k, (k ** 4) // 2)


def make_dataset(k: int, n_train: int, n_test: int, seed: int = 0, n_blanks: int | None = None,
                 unique: bool = True):
    """Train and test sets of (puzzle, solution) pairs; train and test boards are generated from
    the same distribution with one seed (solutions may repeat for 4x4: there are only 288 valid
    4x4 boards, but the blanks differ)."""
    rng = np.random.default_rng(seed)
    if n_blanks is None:
        n_blanks = default_blanks(k)
    total = n_train + n_test
    sols = np.stack([random_solution(k, rng) for _ in range(total)])
    puz = np.stack([make_puzzle(s, k, n_blanks, rng, unique=unique) for s in sols])
    train = SudokuData(k, puz[:n_train], sols[:n_train])
    test = SudokuData(k, puz[n_train:], sols[n_train:])
    return train, test
