//! Rates such as `50/s`: the mesh server's `--rate-limit`, the CRDs' `rateLimit.rate`.

use std::str::FromStr;

/// The form the CRDs accept (a subset of what [`Rate`] parses: no spelled-out units); a test
/// holds every match to parse, except a zero count, which the operator refuses by name.
pub const PATTERN: &str = r"^[0-9]+(\.[0-9]+)?/(s|m|h)$";

/// A rate such as `50/s`, `3000/m` or `100000/h`, in events per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate `{input}`: {why} (expected COUNT/UNIT with UNIT s, m or h, e.g. 50/s)")]
pub struct RateParseError {
    input: String,
    why: &'static str,
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| RateParseError {
            input: input.to_owned(),
            why,
        };
        let (count, unit) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| err("missing `/`"))?;
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| err("count is not a number"))?;
        let seconds = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(err("unknown unit")),
        };
        if !(count.is_finite() && count > 0.0) {
            return Err(err("count must be positive"));
        }
        Ok(Self(count / seconds))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rates_parse_in_any_unit_and_errors_show_the_format() {
        assert_eq!("50/s".parse::<Rate>().unwrap().0, 50.0);
        assert_eq!("3000/m".parse::<Rate>().unwrap().0, 50.0);
        assert_eq!(" 7200 / h ".parse::<Rate>().unwrap().0, 2.0);
        for bad in ["50", "x/s", "0/s", "5/d", "-1/s"] {
            let err = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(err.contains("e.g. 50/s"), "{err}");
        }
    }

    proptest! {
        /// What the CRD schema lets through, the server parses (zero aside).
        #[test]
        fn every_rate_the_schema_admits_parses(rate in "[0-9]{1,6}(\\.[0-9]{1,3})?/[smh]") {
            prop_assert!(regex::Regex::new(PATTERN).unwrap().is_match(&rate));
            let count: f64 = rate.split_once('/').unwrap().0.parse().unwrap();
            prop_assert_eq!(rate.parse::<Rate>().is_ok(), count > 0.0, "{}", rate);
        }
    }
}
