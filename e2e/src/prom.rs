//! Reading Prometheus text exposition, as the tests, chaos cases and benchmarks do.

/// Value of the sample whose series (name and labels, exactly as exposed) is `series`; 0 when
/// absent, as a counter that was never incremented.
pub fn sample(text: &str, series: &str) -> f64 {
    samples(text)
        .find_map(|(s, value)| (s == series).then_some(value))
        .unwrap_or(0.0)
}

/// Sum of every sample of the metric family `family`, whatever its labels.
pub fn family_sum(text: &str, family: &str) -> f64 {
    samples(text)
        .filter(|(series, _)| series.split('{').next() == Some(family))
        .map(|(_, value)| value)
        .sum()
}

/// `(series, value)` of every sample line; comments and unparsable lines are skipped.
fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series, value.trim().parse().ok()?))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total x\na_total 3\nb_total{k=\"1\"} 2\nb_total{k=\"12\"} 5\n\
                        b_total_created 99\nc 1.5\n";

    #[test]
    fn a_sample_is_read_by_its_exact_series() {
        assert_eq!(sample(TEXT, "a_total"), 3.0);
        assert_eq!(sample(TEXT, "b_total{k=\"1\"}"), 2.0);
        assert_eq!(sample(TEXT, "b_total{k=\"12\"}"), 5.0);
        assert_eq!(sample(TEXT, "c"), 1.5);
        assert_eq!(sample(TEXT, "a"), 0.0);
    }

    #[test]
    fn a_family_sums_its_labelled_samples_only() {
        assert_eq!(family_sum(TEXT, "b_total"), 7.0);
        assert_eq!(family_sum(TEXT, "a_total"), 3.0);
        assert_eq!(family_sum(TEXT, "b"), 0.0);
    }
}
