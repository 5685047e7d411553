//! Comparing two arms' rates: the two-proportion z-test with its confidence interval, as live
//! experiments and rollouts report them.

/// The two-sided 95% normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Two proportions compared: arm A (the reference, e.g. the champion) and arm B.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProportionTest {
    pub rate_a: f64,
    pub rate_b: f64,
    /// `rate_b - rate_a`.
    pub difference: f64,
    /// The 95% confidence interval of the difference, with the unpooled standard error
    /// `sqrt(a(1-a)/n_a + b(1-b)/n_b)` (Wald).
    pub ci95: (f64, f64),
    /// The z statistic under "no difference", with the pooled standard error
    /// `sqrt(p(1-p)(1/n_a + 1/n_b))`, `p = (x_a + x_b) / (n_a + n_b)`; 0 when that error is 0
    /// (both arms all successes or all failures: nothing tells them apart).
    pub z: f64,
    /// Two-sided: `P(|Z| ≥ |z|)`.
    pub p_value: f64,
    /// `difference / rate_a`; `None` when `rate_a` is 0.
    pub relative_lift: Option<f64>,
}

/// The two-proportion z-test of `x_b` successes in `n_b` trials against `x_a` in `n_a`; `None`
/// when an arm has no trials. Successes beyond the trials are read as all trials.
pub fn two_proportions(x_a: u64, n_a: u64, x_b: u64, n_b: u64) -> Option<ProportionTest> {
    if n_a == 0 || n_b == 0 {
        return None;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let (xa, xb) = (x_a.min(n_a) as f64, x_b.min(n_b) as f64);
    let (a, b) = (xa / na, xb / nb);
    let difference = b - a;
    let pooled = (xa + xb) / (na + nb);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    let z = if se_pooled > 0.0 { difference / se_pooled } else { 0.0 };
    let se = (a * (1.0 - a) / na + b * (1.0 - b) / nb).sqrt();
    Some(ProportionTest {
        rate_a: a,
        rate_b: b,
        difference,
        ci95: (difference - Z95 * se, difference + Z95 * se),
        z,
        p_value: erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0),
        relative_lift: (a > 0.0).then(|| difference / a),
    })
}

/// The complementary error function, with a fractional error below 1.2e-7 everywhere
/// (Numerical Recipes' `erfcc`, a Chebyshev fit).
pub fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let y = t * (-x * x + poly).exp();
    if x >= 0.0 { y } else { 2.0 - y }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tolerance: f64) {
        assert!((a - b).abs() <= tolerance, "{a} vs {b}");
    }

    #[test]
    fn erfc_matches_the_reference_values() {
        // python3: math.erfc(z / math.sqrt(2)) for z in 0, 0.5, 1, 1.96, 3, 5, 8.
        let expected = [
            (0.0, 1.0),
            (0.5, 0.617_075_077_451_973_8),
            (1.0, 0.317_310_507_862_914_15),
            (1.96, 0.049_995_790_296_440_87),
            (3.0, 0.002_699_796_063_260_191_3),
            (5.0, 5.733_031_437_583_892e-7),
            (8.0, 1.244_192_114_854_363_9e-15),
        ];
        for (z, p) in expected {
            let got = erfc(z / std::f64::consts::SQRT_2);
            assert!((got - p).abs() <= 1.2e-7 * p, "erfc at z = {z}: {got} vs {p}");
            close(erfc(-z / std::f64::consts::SQRT_2), 2.0 - p, 1e-7);
        }
    }

    #[test]
    fn a_worked_example() {
        // 120 of 1000 against 90 of 1000. Computed independently with python3's math:
        //   p = 210/2000; se = sqrt(p(1-p)(2/1000)); z = -0.03/se = -2.1882658846227234
        //   math.erfc(2.1882658846227234 / math.sqrt(2)) = 0.028650240398448486
        //   unpooled se = sqrt(.12*.88/1000 + .09*.91/1000); -0.03 ± 1.959964 se =
        //   (-0.056837912155757356, -0.003162087844242642); lift -0.03 / 0.12 = -0.25
        let t = two_proportions(120, 1000, 90, 1000).unwrap();
        close(t.difference, -0.03, 1e-15);
        close(t.z, -2.188_265_884_622_723_4, 1e-12);
        close(t.p_value, 0.028_650_240_398_448_486, 1e-8);
        close(t.ci95.0, -0.056_837_912_155_757_356, 1e-12);
        close(t.ci95.1, -0.003_162_087_844_242_642, 1e-12);
        close(t.relative_lift.unwrap(), -0.25, 1e-12);
        // Unequal arms, not significant: 30/200 against 45/250 (z = 0.8485281374238568,
        // p = 0.39614390915207426, CI (-0.03867988996737193, 0.09867988996737193)).
        let t = two_proportions(30, 200, 45, 250).unwrap();
        close(t.z, 0.848_528_137_423_856_8, 1e-12);
        close(t.p_value, 0.396_143_909_152_074_26, 1e-8);
        close(t.ci95.0, -0.038_679_889_967_371_93, 1e-12);
        close(t.ci95.1, 0.098_679_889_967_371_93, 1e-12);
    }

    #[test]
    fn degenerate_arms() {
        assert_eq!(two_proportions(0, 0, 5, 10), None);
        assert_eq!(two_proportions(5, 10, 0, 0), None);
        // Nothing on either arm: no difference, no evidence of one, no lift.
        let t = two_proportions(0, 50, 0, 80).unwrap();
        assert_eq!((t.difference, t.z, t.ci95, t.relative_lift), (0.0, 0.0, (0.0, 0.0), None));
        close(t.p_value, 1.0, 1.2e-7);
        let t = two_proportions(50, 50, 80, 80).unwrap();
        assert_eq!((t.z, t.relative_lift), (0.0, Some(0.0)));
        close(t.p_value, 1.0, 1.2e-7);
    }

    proptest! {
        #[test]
        fn the_interval_holds_the_difference_and_p_is_a_probability(
            n_a in 1u64..100_000, n_b in 1u64..100_000, fa in 0.0f64..=1.0, fb in 0.0f64..=1.0,
        ) {
            let (x_a, x_b) = ((fa * n_a as f64) as u64, (fb * n_b as f64) as u64);
            let t = two_proportions(x_a, n_a, x_b, n_b).unwrap();
            prop_assert!(t.ci95.0 <= t.difference && t.difference <= t.ci95.1, "{t:?}");
            prop_assert!((0.0..=1.0).contains(&t.p_value), "{t:?}");
            prop_assert!((t.difference - (t.rate_b - t.rate_a)).abs() < 1e-15);
            // Swapping the arms mirrors everything but the p-value.
            let s = two_proportions(x_b, n_b, x_a, n_a).unwrap();
            prop_assert!((s.z + t.z).abs() < 1e-9 && (s.p_value - t.p_value).abs() < 1e-12);
        }
    }
}
