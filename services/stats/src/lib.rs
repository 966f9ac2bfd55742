//! The statistics behind published indicators (DESIGN §7): 95% intervals for
//! shares (Wilson), means (Student t) and NPS (its standard error);
//! significance by the two-proportion z-test and Welch's t-test; quantiles
//! from a histogram of whole values (working days); and the rule that
//! withholds a figure computed from too few observations, with the
//! disclosure control that keeps it withheld ([`disclosure`]). No I/O, no
//! dependencies: the kpi service and the gateway's benchmarks share it.

pub mod disclosure;

/// The standard normal quantile for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The default minimum number of observations for a figure to be published.
pub const DEFAULT_K: u64 = 10;

/// A closed interval `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// The result of a significance test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Test {
    /// The test statistic (z or t).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

impl Test {
    /// Whether the difference is significant at the 95% level.
    pub fn significant(&self) -> bool {
        self.p_value < 0.05
    }
}

/// Whether a figure from `n` observations must be withheld under threshold `k`.
pub fn suppressed(n: u64, k: u64) -> bool {
    n < k
}

/// The 95% Wilson score interval of a proportion `successes / n`; `None`
/// when `n` is 0. It stays inside [0, 1] and is sensible at p = 0 and p = 1,
/// unlike the normal (Wald) interval.
pub fn wilson(successes: u64, n: u64) -> Option<Interval> {
    wilson_z(successes, n, Z95)
}

/// The Wilson score interval for an arbitrary normal quantile `z`.
pub fn wilson_z(successes: u64, n: u64, z: f64) -> Option<Interval> {
    if n == 0 || successes > n {
        return None;
    }
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z2 / n;
    // At p = 0 and p = 1 the bound on that side is exact; snap it so that
    // rounding does not publish 0.9999999999999999.
    let low = if successes == 0 {
        0.0
    } else {
        ((centre - half) / denom).max(0.0)
    };
    let high = if p >= 1.0 {
        1.0
    } else {
        ((centre + half) / denom).min(1.0)
    };
    Some(Interval { low, high })
}

/// Mean, sample standard deviation and 95% t interval from the sufficient
/// statistics of a sample: its size, sum and sum of squares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanEstimate {
    /// The sample mean.
    pub mean: f64,
    /// The sample variance (n − 1 denominator); 0 when n is 1.
    pub variance: f64,
    /// The 95% interval; `None` when n < 2.
    pub interval: Option<Interval>,
}

/// The mean of a sample of `n` values with the given sum and sum of squares,
/// with its 95% Student t interval. `None` when `n` is 0.
pub fn mean(n: u64, sum: f64, sum_squares: f64) -> Option<MeanEstimate> {
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let m = sum / nf;
    if n < 2 {
        return Some(MeanEstimate {
            mean: m,
            variance: 0.0,
            interval: None,
        });
    }
    let variance = ((sum_squares - sum * sum / nf) / (nf - 1.0)).max(0.0);
    let half = t_quantile(0.975, nf - 1.0) * (variance / nf).sqrt();
    Some(MeanEstimate {
        mean: m,
        variance,
        interval: Some(Interval {
            low: m - half,
            high: m + half,
        }),
    })
}

/// Net Promoter Score as a fraction in [−1, 1], with its standard error and
/// 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NpsEstimate {
    /// Share of promoters minus share of detractors.
    pub score: f64,
    /// sqrt((pP + pD − (pP − pD)²) / n).
    pub standard_error: f64,
    /// score ± z·SE with z = [`Z95`] (1.959964), clamped to [−1, 1].
    pub interval: Interval,
}

/// NPS from `promoters` (9–10) and `detractors` (0–6) among `n` answers.
pub fn nps(promoters: u64, detractors: u64, n: u64) -> Option<NpsEstimate> {
    if n == 0 || promoters + detractors > n {
        return None;
    }
    let nf = n as f64;
    let (pp, pd) = (promoters as f64 / nf, detractors as f64 / nf);
    let score = pp - pd;
    let standard_error = ((pp + pd - score * score).max(0.0) / nf).sqrt();
    Some(NpsEstimate {
        score,
        standard_error,
        interval: Interval {
            low: (score - Z95 * standard_error).max(-1.0),
            high: (score + Z95 * standard_error).min(1.0),
        },
    })
}

/// Two-proportion z-test (pooled) of x1/n1 against x2/n2. `None` when a
/// sample is empty or the pooled share is 0 or 1 (no variance: the two
/// shares are equal).
pub fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<Test> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (a, b) = (n1 as f64, n2 as f64);
    let (p1, p2) = (x1 as f64 / a, x2 as f64 / b);
    let pooled = (x1 + x2) as f64 / (a + b);
    let se = (pooled * (1.0 - pooled) * (1.0 / a + 1.0 / b)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    Some(z_test((p1 - p2) / se))
}

/// A two-sided z-test of a difference `d` with standard error `se` (e.g.
/// between two NPS values: se = sqrt(se1² + se2²)).
pub fn z_difference(d: f64, se: f64) -> Option<Test> {
    (se > 0.0 && se.is_finite()).then(|| z_test(d / se))
}

fn z_test(z: f64) -> Test {
    Test {
        statistic: z,
        p_value: (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0),
    }
}

/// Welch's unequal-variances t-test of two means, each given by its mean,
/// sample variance and size. `None` when a sample has fewer than 2 values or
/// both variances are 0.
pub fn welch_t(a: (f64, f64, u64), b: (f64, f64, u64)) -> Option<Test> {
    let ((m1, v1, n1), (m2, v2, n2)) = (a, b);
    if n1 < 2 || n2 < 2 {
        return None;
    }
    let (s1, s2) = (v1 / n1 as f64, v2 / n2 as f64);
    let se2 = s1 + s2;
    if se2 <= 0.0 || !se2.is_finite() {
        return None;
    }
    let t = (m1 - m2) / se2.sqrt();
    let df = se2 * se2 / (s1 * s1 / (n1 as f64 - 1.0) + s2 * s2 / (n2 as f64 - 1.0));
    Some(Test {
        statistic: t,
        p_value: (2.0 * (1.0 - t_cdf(t.abs(), df))).clamp(0.0, 1.0),
    })
}

/// A quantile of whole values given as a histogram of `(value, count)`, in
/// any order, with a distribution-free 95% interval from the binomial
/// distribution of order statistics (normal approximation of the ranks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileEstimate {
    /// The smallest value whose cumulative count reaches ⌈q·n⌉ (nearest rank).
    pub value: f64,
    /// Values at ranks ⌊nq − z·sqrt(nq(1−q))⌋ and ⌈nq + z·sqrt(nq(1−q))⌉, z = [`Z95`],
    /// clamped to 1..n.
    pub interval: Interval,
}

/// The `q` quantile (0 < q ≤ 1) of a histogram; `None` when it is empty.
pub fn quantile(histogram: &[(i64, u64)], q: f64) -> Option<QuantileEstimate> {
    let mut sorted: Vec<(i64, u64)> = histogram.iter().copied().filter(|h| h.1 > 0).collect();
    sorted.sort_unstable();
    let n: u64 = sorted.iter().map(|h| h.1).sum();
    if n == 0 || !(q > 0.0 && q <= 1.0) {
        return None;
    }
    let at_rank = |rank: u64| -> f64 {
        let rank = rank.clamp(1, n);
        let mut seen = 0;
        for (v, c) in &sorted {
            seen += c;
            if seen >= rank {
                return *v as f64;
            }
        }
        sorted.last().map_or(0.0, |h| h.0 as f64)
    };
    let nf = n as f64;
    let rank = (q * nf).ceil() as u64;
    let spread = Z95 * (nf * q * (1.0 - q)).sqrt();
    let low = (nf * q - spread).floor().max(1.0) as u64;
    let high = (nf * q + spread).ceil().min(nf) as u64;
    Some(QuantileEstimate {
        value: at_rank(rank),
        interval: Interval {
            low: at_rank(low),
            high: at_rank(high),
        },
    })
}

/// The standard normal distribution function.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit,
/// relative error below 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Student's t distribution function with `df` (possibly fractional)
/// degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let x = df / (df + t * t);
    let tail = 0.5 * beta_inc(df / 2.0, 0.5, x);
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The `p` quantile of Student's t with `df` degrees of freedom, by
/// bisection on the distribution function (to 1e-12).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while t_cdf(hi, df) < p && hi < 1e12 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b).
fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// Lentz's continued fraction for the incomplete beta function.
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Newcombe (1998), "Two-sided confidence intervals for the single
    /// proportion", Statistics in Medicine 17, Table I, method 3 (Wilson
    /// score without continuity correction), to four decimals.
    #[test]
    fn wilson_matches_newcombe_1998() {
        let cases = [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ];
        for (x, n, lo, hi) in cases {
            let i = wilson(x, n).expect("interval");
            assert!(close(i.low, lo, 5e-5), "{x}/{n}: low {} vs {lo}", i.low);
            assert!(close(i.high, hi, 5e-5), "{x}/{n}: high {} vs {hi}", i.high);
        }
    }

    #[test]
    fn wilson_edges() {
        assert_eq!(wilson(0, 0), None);
        assert_eq!(wilson(3, 2), None);
        let zero = wilson(0, 10).expect("p = 0");
        assert_eq!(zero.low, 0.0);
        assert!(zero.high > 0.0 && zero.high < 0.35);
        let one = wilson(10, 10).expect("p = 1");
        assert_eq!(one.high, 1.0);
        assert!(close(one.low, 1.0 - zero.high, 1e-12));
    }

    /// Critical values of Student's t as printed in standard tables
    /// (two-sided 95%, i.e. the 0.975 quantile).
    #[test]
    fn t_quantiles_match_tables() {
        let table = [
            (1.0, 12.706_2),
            (2.0, 4.302_7),
            (5.0, 2.570_6),
            (9.0, 2.262_2),
            (24.0, 2.063_9),
            (30.0, 2.042_3),
            (120.0, 1.979_9),
        ];
        for (df, t) in table {
            let q = t_quantile(0.975, df);
            assert!(close(q, t, 5e-5), "df {df}: {q} vs {t}");
        }
        assert!(close(t_quantile(0.975, 1e7), Z95, 1e-5));
        assert!(close(t_quantile(0.025, 9.0), -2.2622, 5e-5));
    }

    /// A textbook example: ten values with mean 10 and sample standard
    /// deviation 2 give 10 ± 2.2622·2/√10 = [8.5693, 11.4307].
    #[test]
    fn mean_t_interval_worked_example() {
        let (n, m, sd) = (10u64, 10.0_f64, 2.0_f64);
        let sum = m * n as f64;
        let sum_squares = sd * sd * (n as f64 - 1.0) + sum * sum / n as f64;
        let e = mean(n, sum, sum_squares).expect("estimate");
        let i = e.interval.expect("interval");
        assert!(close(e.mean, 10.0, 1e-12));
        assert!(close(e.variance, 4.0, 1e-9));
        assert!(close(i.low, 8.5693, 5e-5), "{}", i.low);
        assert!(close(i.high, 11.4307, 5e-5), "{}", i.high);
        assert_eq!(mean(0, 0.0, 0.0), None);
        let single = mean(1, 4.0, 16.0).expect("one value");
        assert_eq!(single.interval, None);
        let constant = mean(5, 20.0, 80.0).expect("no spread");
        let ci = constant.interval.expect("interval");
        assert_eq!((ci.low, ci.high), (4.0, 4.0));
    }

    /// The worked example of whuber's answer to "How can I calculate margin
    /// of error in a NPS result?" (Cross Validated): half promoters, a third
    /// passives, a sixth detractors give NPS 1/3 and variance 5/9 per answer.
    /// docs/kpi.md states the z every interval uses as the code has it (to
    /// six places), never as a rounded 1.96 the code does not use.
    #[test]
    fn docs_state_the_z_the_intervals_use() {
        let docs = include_str!("../../../docs/kpi.md");
        let z = format!("{Z95:.6}");
        assert_eq!(z, "1.959964");
        let section = docs
            .split("## Intervals, significance and suppression")
            .nth(1)
            .expect("the intervals section");
        for bullet in ["**Shares**", "**NPS**", "**Quantiles**"] {
            let text = section
                .split("\n- ")
                .find(|b| b.starts_with(bullet))
                .unwrap_or_else(|| panic!("{bullet} in docs/kpi.md"));
            assert!(text.contains(&z), "{bullet} names z = {z}: {text}");
            let rounded_as_z = text.replace("≈ 1.96", "").contains("1.96·")
                || text.replace("≈ 1.96", "").contains("1.96√");
            assert!(!rounded_as_z, "{bullet} computes with 1.96: {text}");
        }
    }

    #[test]
    fn nps_matches_worked_example() {
        let e = nps(300, 100, 600).expect("estimate");
        assert!(close(e.score, 1.0 / 3.0, 1e-12));
        assert!(close(
            e.standard_error,
            (5.0 / 9.0 / 600.0_f64).sqrt(),
            1e-12
        ));
        assert!(close(
            e.interval.low,
            1.0 / 3.0 - Z95 * e.standard_error,
            1e-12
        ));
        assert_eq!(nps(0, 0, 0), None);
        let all = nps(20, 0, 20).expect("all promoters");
        assert_eq!((all.score, all.standard_error), (1.0, 0.0));
        assert_eq!(all.interval.high, 1.0);
        let none = nps(0, 20, 20).expect("all detractors");
        assert_eq!(none.score, -1.0);
    }

    #[test]
    fn two_proportions_on_known_data() {
        // 60/100 vs 40/100: pooled 0.5, se = sqrt(0.25 * 0.02) = 0.0707, z = 2.828.
        let t = two_proportion_z(60, 100, 40, 100).expect("test");
        assert!(close(t.statistic, 2.828_427, 1e-5));
        assert!(close(t.p_value, 0.004_677_7, 1e-5));
        assert!(t.significant());
        let same = two_proportion_z(50, 100, 49, 100).expect("test");
        assert!(!same.significant());
        assert_eq!(two_proportion_z(0, 10, 0, 10), None);
        assert_eq!(two_proportion_z(1, 0, 0, 10), None);
    }

    #[test]
    fn welch_on_known_data() {
        // Means 5 and 4, variances 1 and 1, n 30 each: t = 1/sqrt(2/30) = 3.873, df = 58.
        let t = welch_t((5.0, 1.0, 30), (4.0, 1.0, 30)).expect("test");
        assert!(close(t.statistic, 3.872_983, 1e-5));
        assert!(t.p_value < 0.001 && t.significant());
        let small = welch_t((5.0, 4.0, 10), (4.8, 4.0, 10)).expect("test");
        assert!(!small.significant());
        assert_eq!(welch_t((1.0, 0.0, 5), (1.0, 0.0, 5)), None);
        assert_eq!(welch_t((1.0, 1.0, 1), (1.0, 1.0, 5)), None);
    }

    #[test]
    fn normal_cdf_values() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_cdf(Z95), 0.975, 1e-7));
        assert!(close(normal_cdf(-1.0), 0.158_655_25, 1e-7));
    }

    #[test]
    fn quantiles_from_histograms() {
        // 1..=10 once each: median (nearest rank 5) is 5, p90 (rank 9) is 9.
        let h: Vec<(i64, u64)> = (1..=10).map(|v| (v, 1)).collect();
        assert_eq!(quantile(&h, 0.5).expect("median").value, 5.0);
        assert_eq!(quantile(&h, 0.9).expect("p90").value, 9.0);
        assert_eq!(quantile(&h, 1.0).expect("max").value, 10.0);
        let skewed = [(20, 1), (3, 8), (40, 1)];
        let m = quantile(&skewed, 0.5).expect("median");
        assert_eq!(m.value, 3.0);
        assert!(m.interval.low <= 3.0 && m.interval.high >= 3.0);
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[(3, 0)], 0.5), None);
    }

    #[test]
    fn suppression_rules() {
        assert!(suppressed(9, DEFAULT_K));
        assert!(!suppressed(10, DEFAULT_K));
    }
}
