* Hand-written for sparseqp's tests: RANGES on E (R > 0 and R < 0), L and G rows (R < 0:
* |R| is used), a free N row with COLUMNS and RHS entries (dropped), and second RHS and
* RANGES sets (ignored: only the first set of each applies).
*   e1: E, rhs 1,  R = 2   -> 1 <= x <= 3
*   e2: E, rhs -1, R = -3  -> -4 <= y <= -1
*   l1: L, rhs 5,  R = -2  -> 3 <= w <= 5
*   g1: G, rhs 2,  R = -4  -> 2 <= v <= 6
*   sum: E, rhs 10         -> x + y + w + v + s = 10
* minimize 1/2 (x^2 + y^2 + w^2 + v^2 + s^2), x, y, w, v free, s >= 0
* optimum x = v = s = 8/3, y = -1, w = 3: objective 47/3 = 15.666666666666666
NAME          RANGES
ROWS
 N  obj
 E  e1
 E  e2
 L  l1
 G  g1
 E  sum
 N  junk
COLUMNS
    x         e1        1.0          sum       1.0
    x         junk      5.0
    y         e2        1.0          sum       1.0
    w         l1        1.0          sum       1.0
    v         g1        1.0          sum       1.0
    s         sum       1.0          junk      -1.0
RHS
    rhs1      e1        1.0          e2        -1.0
    rhs1      l1        5.0          g1        2.0
    rhs1      sum       10.0         junk      99.0
    rhs2      sum       20.0         e1        7.0
RANGES
    rng1      e1        2.0          e2        -3.0
    rng1      l1        -2.0         g1        -4.0
    rng2      sum       5.0          l1        100.0
BOUNDS
 FR bnd       x
 FR bnd       y
 FR bnd       w
 FR bnd       v
QUADOBJ
    x         x         1.0
    y         y         1.0
    w         w         1.0
    v         v         1.0
    s         s         1.0
ENDATA
