//! A small exact mixed-integer linear solver: a dense two-phase simplex with Bland's rule (which
//! cannot cycle) under a depth-first branch and bound. Sized for fleet plans (tens of variables);
//! the node limit turns a runaway search into a best-so-far answer that says it is not proven.

/// `sum coeffs . x  (<=|=|>=)  rhs`.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub coeffs: Vec<(usize, f64)>,
    pub sense: Sense,
    pub rhs: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sense {
    Le,
    Eq,
    Ge,
}

/// Minimise `objective . x` subject to `rows`, `x >= 0`, and `x[j]` integral for `j` in `integers`.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub n: usize,
    pub objective: Vec<f64>,
    pub rows: Vec<Row>,
    pub integers: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LpResult {
    Optimal {
        x: Vec<f64>,
        value: f64,
    },
    Infeasible,
    Unbounded,
    /// The pivot limit was reached (should not happen with Bland's rule on sane data).
    Stalled,
}

const EPS: f64 = 1e-9;

/// Solves the linear relaxation (integrality ignored).
pub fn solve_lp(p: &Problem) -> LpResult {
    Tableau::new(p).solve(&p.objective)
}

/// An integer solution, whether it is proven optimal, and the search effort.
#[derive(Clone, Debug, PartialEq)]
pub struct MipSolution {
    pub x: Vec<f64>,
    pub value: f64,
    pub proven_optimal: bool,
    pub nodes: usize,
}

/// Branch and bound; `incumbent` is a known feasible solution to start from. None: infeasible (or
/// no integer solution found within the node limit).
pub fn solve_mip(p: &Problem, node_limit: usize, incumbent: Option<(Vec<f64>, f64)>) -> Option<MipSolution> {
    let mut best = incumbent;
    let mut nodes = 0usize;
    let mut complete = true;
    // A node is the list of extra bound rows on integer variables.
    let mut stack: Vec<Vec<Row>> = vec![Vec::new()];
    while let Some(bounds) = stack.pop() {
        if nodes >= node_limit {
            complete = false;
            break;
        }
        nodes += 1;
        let mut q = p.clone();
        q.rows.extend(bounds.iter().cloned());
        let (x, value) = match solve_lp(&q) {
            LpResult::Optimal { x, value } => (x, value),
            LpResult::Infeasible => continue,
            LpResult::Unbounded | LpResult::Stalled => {
                complete = false;
                continue;
            }
        };
        if let Some((_, b)) = &best {
            if value >= b - 1e-9 * b.abs().max(1.0) {
                continue;
            }
        }
        // Branch on the most fractional integer variable.
        let frac = p
            .integers
            .iter()
            .map(|&j| (j, x[j] - x[j].floor()))
            .filter(|&(_, f)| f > 1e-7 && f < 1.0 - 1e-7)
            .max_by(|a, b| (0.5 - (a.1 - 0.5).abs()).total_cmp(&(0.5 - (b.1 - 0.5).abs())));
        match frac {
            None => {
                let mut x = x;
                for &j in &p.integers {
                    x[j] = x[j].round();
                }
                best = Some((x, value));
            }
            Some((j, _)) => {
                let mut down = bounds.clone();
                down.push(Row { coeffs: vec![(j, 1.0)], sense: Sense::Le, rhs: x[j].floor() });
                let mut up = bounds;
                up.push(Row { coeffs: vec![(j, 1.0)], sense: Sense::Ge, rhs: x[j].ceil() });
                // Rounding up is feasible more often in covering problems: explore it first.
                stack.push(down);
                stack.push(up);
            }
        }
    }
    best.map(|(x, value)| MipSolution { x, value, proven_optimal: complete, nodes })
}

/// Dense simplex tableau: `m` constraint rows over `cols` columns (structural, slack/surplus,
/// artificial) plus the right-hand side; `obj` is the reduced-cost row with -value in its last cell.
struct Tableau {
    m: usize,
    n_struct: usize,
    n_cols: usize,
    first_artificial: usize,
    rows: Vec<Vec<f64>>,
    basis: Vec<usize>,
}

impl Tableau {
    fn new(p: &Problem) -> Tableau {
        let m = p.rows.len();
        let n_slack = p.rows.iter().filter(|r| r.sense != Sense::Eq).count();
        let first_artificial = p.n + n_slack;
        let n_cols = first_artificial + m;
        let mut rows = vec![vec![0.0; n_cols + 1]; m];
        let mut basis = vec![0; m];
        let mut slack = p.n;
        for (i, r) in p.rows.iter().enumerate() {
            // Make the right-hand side non-negative.
            let flip = r.rhs < 0.0;
            let s = if flip { -1.0 } else { 1.0 };
            for &(j, a) in &r.coeffs {
                if j < p.n {
                    rows[i][j] += s * a;
                }
            }
            rows[i][n_cols] = s * r.rhs;
            let sense = match (r.sense, flip) {
                (Sense::Le, true) => Sense::Ge,
                (Sense::Ge, true) => Sense::Le,
                (other, _) => other,
            };
            match sense {
                Sense::Le => {
                    rows[i][slack] = 1.0;
                    basis[i] = slack;
                    slack += 1;
                }
                Sense::Ge => {
                    rows[i][slack] = -1.0;
                    slack += 1;
                    rows[i][first_artificial + i] = 1.0;
                    basis[i] = first_artificial + i;
                }
                Sense::Eq => {
                    rows[i][first_artificial + i] = 1.0;
                    basis[i] = first_artificial + i;
                }
            }
        }
        Tableau { m, n_struct: p.n, n_cols, first_artificial, rows, basis }
    }

    fn pivot(&mut self, obj: &mut [f64], r: usize, c: usize) {
        let pv = self.rows[r][c];
        for v in self.rows[r].iter_mut() {
            *v /= pv;
        }
        let pivot_row = self.rows[r].clone();
        for (i, row) in self.rows.iter_mut().enumerate() {
            if i != r {
                let f = row[c];
                if f != 0.0 {
                    for (v, p) in row.iter_mut().zip(&pivot_row) {
                        *v -= f * p;
                    }
                }
            }
        }
        let f = obj[c];
        if f != 0.0 {
            for (v, p) in obj.iter_mut().zip(&pivot_row) {
                *v -= f * p;
            }
        }
        self.basis[r] = c;
    }

    /// Runs simplex on `obj` over columns `< allowed`; false if unbounded or stalled.
    fn run(&mut self, obj: &mut [f64], allowed: usize) -> Result<(), LpResult> {
        let limit = 50_000 + 100 * (self.m + self.n_cols);
        for _ in 0..limit {
            // Bland: the lowest-index improving column, the lowest-index basic variable on ties.
            let Some(c) = (0..allowed).find(|&j| obj[j] < -EPS) else { return Ok(()) };
            let mut leave: Option<(usize, f64)> = None;
            for i in 0..self.m {
                let a = self.rows[i][c];
                if a > EPS {
                    let ratio = self.rows[i][self.n_cols] / a;
                    leave = match leave {
                        None => Some((i, ratio)),
                        Some((k, best)) => {
                            if ratio < best - EPS || (ratio <= best + EPS && self.basis[i] < self.basis[k]) {
                                Some((i, ratio))
                            } else {
                                Some((k, best))
                            }
                        }
                    };
                }
            }
            let Some((r, _)) = leave else { return Err(LpResult::Unbounded) };
            self.pivot(obj, r, c);
        }
        Err(LpResult::Stalled)
    }

    fn solve(mut self, objective: &[f64]) -> LpResult {
        let width = self.n_cols + 1;
        // Phase 1: minimise the sum of the artificial variables.
        let mut obj = vec![0.0; width];
        for o in &mut obj[self.first_artificial..self.n_cols] {
            *o = 1.0;
        }
        for i in 0..self.m {
            if self.basis[i] >= self.first_artificial {
                for (o, v) in obj.iter_mut().zip(&self.rows[i]) {
                    *o -= v;
                }
            }
        }
        if let Err(e) = self.run(&mut obj, self.n_cols) {
            return e;
        }
        let infeasibility = -obj[self.n_cols];
        let scale = self.rows.iter().map(|r| r[self.n_cols].abs()).fold(1.0, f64::max);
        if infeasibility > 1e-7 * scale {
            return LpResult::Infeasible;
        }
        // Drive artificial variables (at zero) out of the basis where a real column can replace them.
        for i in 0..self.m {
            if self.basis[i] >= self.first_artificial {
                if let Some(c) = (0..self.first_artificial).find(|&j| self.rows[i][j].abs() > EPS) {
                    self.pivot(&mut obj, i, c);
                }
            }
        }
        // Phase 2 over the real columns.
        let mut obj = vec![0.0; width];
        obj[..self.n_struct].copy_from_slice(&objective[..self.n_struct]);
        for i in 0..self.m {
            let b = self.basis[i];
            let cb = obj[b];
            if cb != 0.0 {
                let row = self.rows[i].clone();
                for (o, v) in obj.iter_mut().zip(&row) {
                    *o -= cb * v;
                }
            }
        }
        if let Err(e) = self.run(&mut obj, self.first_artificial) {
            return e;
        }
        let mut x = vec![0.0; self.n_struct];
        for i in 0..self.m {
            if self.basis[i] < self.n_struct {
                x[self.basis[i]] = self.rows[i][self.n_cols].max(0.0);
            }
        }
        let value = x.iter().zip(objective).map(|(a, b)| a * b).sum();
        LpResult::Optimal { x, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(coeffs: &[(usize, f64)], sense: Sense, rhs: f64) -> Row {
        Row { coeffs: coeffs.to_vec(), sense, rhs }
    }

    #[test]
    fn a_textbook_lp() {
        // max 3x + 5y s.t. x <= 4, 2y <= 12, 3x + 2y <= 18 -> (2, 6), 36.
        let p = Problem {
            n: 2,
            objective: vec![-3.0, -5.0],
            rows: vec![
                row(&[(0, 1.0)], Sense::Le, 4.0),
                row(&[(1, 2.0)], Sense::Le, 12.0),
                row(&[(0, 3.0), (1, 2.0)], Sense::Le, 18.0),
            ],
            integers: vec![],
        };
        match solve_lp(&p) {
            LpResult::Optimal { x, value } => {
                assert!((x[0] - 2.0).abs() < 1e-9 && (x[1] - 6.0).abs() < 1e-9, "{x:?}");
                assert!((value + 36.0).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equality_and_covering_rows_and_infeasibility() {
        // min x + 2y s.t. x + y = 3, x >= 1, y >= 0.5 -> (2.5, 0.5), 3.5.
        let p = Problem {
            n: 2,
            objective: vec![1.0, 2.0],
            rows: vec![
                row(&[(0, 1.0), (1, 1.0)], Sense::Eq, 3.0),
                row(&[(0, 1.0)], Sense::Ge, 1.0),
                row(&[(1, 1.0)], Sense::Ge, 0.5),
            ],
            integers: vec![],
        };
        assert!(matches!(solve_lp(&p), LpResult::Optimal { value, .. } if (value - 3.5).abs() < 1e-9));
        let mut bad = p.clone();
        bad.rows.push(row(&[(0, 1.0)], Sense::Le, 0.5));
        assert_eq!(solve_lp(&bad), LpResult::Infeasible);
        let unbounded =
            Problem { n: 1, objective: vec![-1.0], rows: vec![row(&[(0, 1.0)], Sense::Ge, 1.0)], integers: vec![] };
        assert_eq!(solve_lp(&unbounded), LpResult::Unbounded);
    }

    #[test]
    fn integer_cover_beats_rounding_the_relaxation() {
        // Serve 10 units with boxes of 4 ($3) and 3 ($2.5): LP says 2.5 big = $7.5; rounding gives
        // 3 big = $9; the optimum is 1 big + 2 small = $8.
        let p = Problem {
            n: 2,
            objective: vec![3.0, 2.5],
            rows: vec![row(&[(0, 4.0), (1, 3.0)], Sense::Ge, 10.0)],
            integers: vec![0, 1],
        };
        let s = solve_mip(&p, 10_000, None).unwrap();
        assert!(s.proven_optimal);
        assert!((s.value - 8.0).abs() < 1e-9, "{s:?}");
        assert_eq!((s.x[0], s.x[1]), (1.0, 2.0));
    }

    #[test]
    fn node_limits_say_the_answer_is_not_proven() {
        let p = Problem {
            n: 2,
            objective: vec![3.0, 2.5],
            rows: vec![row(&[(0, 4.0), (1, 3.0)], Sense::Ge, 10.0)],
            integers: vec![0, 1],
        };
        let s = solve_mip(&p, 1, Some((vec![3.0, 0.0], 9.0))).unwrap();
        assert!(!s.proven_optimal);
        assert_eq!(s.value, 9.0);
    }
}
