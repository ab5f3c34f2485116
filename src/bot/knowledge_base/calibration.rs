//! The bot's confidence: the probability that an entry answers a message, from a logistic model
//! over what the matcher measured, so that a threshold means the same on any knowledge base.
//!
//! The features of a candidate ([`features`]): its ranking score, its margin over the best
//! other candidate, its question and answer cosines, the shares of the message its questions
//! and its answer cover, the share of the message the index knows at all, the message's length,
//! whether the entry is in the message's script, score × coverage, whether the message is
//! mostly Chinese, alone and times the score (Chinese and English scores spread differently),
//! the share of the message any of the entry's texts holds, the largest part of the message the
//! entry lacks (a near-miss asks about something the entry never mentions), the margin relative
//! to the candidate's score, and how much more of the message the candidate holds than the best
//! other one. Each business judged by coefficients fitted on the other two
//! (`eval::cross_business`) is how features are chosen: the two margins lowered that estimate's
//! log-loss from 0.450 to 0.438; the kind of question asked and answered, English word pairs and
//! other variants of the score did not help and are not here. The coefficients
//! ([`COEFFICIENTS`]) were fitted by [`fit`] (L2-regularised logistic regression, Newton steps)
//! on tests/data/kb_eval (every file of its three businesses: all of it is tuning data now), labelling a message's top candidate 1 when it
//! is the expected entry and 0 otherwise (a wrong entry, or any entry for a message that none
//! answers). To refit after changing the matcher:
//!
//! ```text
//! cargo test --test it kb_eval::the_shipped_calibration_is_the_fit_of_the_tuning_split -- --nocapture
//! ```
//!
//! and paste the printed array here. `kb_eval::cross_validated_figures_hold` gives the honest
//! estimates: each message judged by coefficients fitted without it.
//!
//! With the semantic tier, a second model ([`SEMANTIC_COEFFICIENTS`], [`semantic_features`])
//! weighs a candidate's lexical log-odds with where its cosine stands among the site's entries;
//! `kb_eval::the_shipped_semantic_calibration_is_the_fit_of_the_tuning_businesses` refits it.

use super::matcher::Query;

/// How many features a candidate has.
pub const N_FEATURES: usize = 16;

/// Bias first, then one weight per feature in the order of [`features`]. Fitted on the whole
/// set (see the module docs), 2026-12-06.
pub const COEFFICIENTS: [f64; N_FEATURES + 1] = [
    -3.781, 0.508, 0.122, -0.468, 0.722, -0.134, 0.731, -0.043, 0.060, 1.236, 0.421, 0.289, 0.796, 2.666, 0.335, 2.032,
    1.205,
];

/// The features of the candidate at `position` of a query's ranking.
pub fn features(query: &Query, position: usize) -> [f64; N_FEATURES] {
    let candidate = &query.ranked[position];
    let (best_other, other_union) = query
        .ranked
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != position)
        .map(|(_, scored)| (scored.score, scored.union_coverage))
        .fold((0.0_f32, 0.0_f32), |best, next| if next.0 > best.0 { next } else { best });
    // The margin relative to the larger score means the same on a knowledge base whose scores
    // run low (short entries, wordy visitors) as on one whose scores run high. It is in [-1, 1]
    // at every position: 1 − next/top for the top candidate, which the fit sees, and bounded
    // below for a runner-up. A candidate with no
    // lexical score gets 0: the lexical margin says nothing of it.
    let relative_margin =
        if candidate.score > 0.0 { (candidate.score - best_other) / candidate.score.max(best_other) } else { 0.0 };
    [
        f64::from(candidate.score),
        f64::from(candidate.score - best_other),
        f64::from(candidate.question),
        f64::from(candidate.answer),
        f64::from(candidate.coverage),
        f64::from(query.known_share),
        (1.0 + query.n_features as f64).ln(),
        f64::from(candidate.answer_coverage),
        f64::from(u8::from(candidate.same_script)),
        f64::from(candidate.score * candidate.coverage.max(candidate.answer_coverage)),
        f64::from(u8::from(query.cjk)),
        f64::from(u8::from(query.cjk)) * f64::from(candidate.score),
        f64::from(candidate.union_coverage),
        f64::from(candidate.missing),
        f64::from(relative_margin),
        f64::from(candidate.union_coverage - other_union),
    ]
}

/// The probability, 0 to 1, under `coefficients`.
pub fn probability<const F: usize, const W: usize>(coefficients: &[f64; W], features: &[f64; F]) -> f64 {
    1.0 / (1.0 + (-logit(coefficients, features)).exp())
}

/// How many of the entries most similar in meaning join the lexical candidates.
pub const SEMANTIC_DEPTH: usize = 3;

/// The fewest entries with a vector for the semantic tier to decide: with fewer, where a cosine
/// stands among them says little (a candidate found by meaning alone could not reach the
/// default threshold below 12), and the lexical ranking decides. The calibration was fitted on
/// sites of 30 to 45 entries.
pub const SEMANTIC_MIN_ENTRIES: usize = 12;

/// How many features a candidate has with the semantic tier.
pub const N_SEMANTIC_FEATURES: usize = 4;

/// Bias first, then the weights of [`semantic_features`]: the lexical log-odds, whether the
/// matcher found the candidate at all, the cosine's z-score among the site's entries, and its
/// margin over the best other entry's cosine in the same units. Fitted by [`fit`] on the cosines
/// of a real multilingual model (multilingual-e5-small; tests/data/kb_eval/cosines_e5.jsonl) for
/// the shop, hotel and course platform, the same way as [`COEFFICIENTS`], 2026-12-06.
/// Scores relative to the site's own entries rather than raw cosines are meant to keep a
/// threshold's meaning across models, whose cosines sit in different ranges (e5's between 0.67
/// and 0.95 on the evaluation set); only e5 was measured. Refit after every lexical refit: the
/// lexical log-odds are a feature.
pub const SEMANTIC_COEFFICIENTS: [f64; N_SEMANTIC_FEATURES + 1] = [-0.753, 0.440, -0.723, 0.698, 1.228];

/// The least spread a message's cosines are taken to have: about the lowest tenth of what a real
/// model gives over a few dozen entries (e5, per message: 0.007 to 0.057, a tenth under 0.021). Without it, a site of a few entries
/// whose cosines happen to be close would turn a hair's difference into a large z-score.
const MIN_COSINE_DEVIATION: f64 = 0.02;

/// The lexical log-odds a candidate found by meaning alone is given: about what the matcher's
/// weakest candidates get.
const NO_LEXICAL_LOGIT: f64 = -8.0;

/// How a message's cosines spread over a site's entries: what a candidate's cosine is relative to.
#[derive(Clone, Copy, Debug, Default)]
pub struct CosineSpread {
    /// How many entries have a cosine.
    pub count: usize,
    pub mean: f64,
    pub deviation: f64,
    /// The highest and second-highest cosines.
    pub best: f64,
    pub second: f64,
}

impl CosineSpread {
    pub fn of(cosines: impl Iterator<Item = f32>) -> CosineSpread {
        let (mut n, mut sum, mut squares) = (0.0_f64, 0.0_f64, 0.0_f64);
        let (mut best, mut second) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for cosine in cosines.map(f64::from) {
            n += 1.0;
            sum += cosine;
            squares += cosine * cosine;
            if cosine > best {
                second = best;
                best = cosine;
            } else if cosine > second {
                second = cosine;
            }
        }
        let mean = if n > 0.0 { sum / n } else { 0.0 };
        let deviation = if n > 0.0 { (squares / n - mean * mean).max(0.0).sqrt() } else { 0.0 };
        CosineSpread {
            count: n as usize,
            mean,
            deviation,
            best,
            second: if second.is_finite() { second } else { best },
        }
    }
}

/// The features of a candidate with the semantic tier: its lexical log-odds (`None` when the
/// matcher did not find it), and its cosine placed among the site's entries (neither above nor
/// below them when there are fewer than two: one cosine says nothing of where it stands).
pub fn semantic_features(lexical: Option<f64>, cosine: f32, spread: &CosineSpread) -> [f64; N_SEMANTIC_FEATURES] {
    let cosine = f64::from(cosine);
    let unit = spread.deviation.max(MIN_COSINE_DEVIATION);
    let best_other = if cosine >= spread.best { spread.second } else { spread.best };
    let (z_score, margin) =
        if spread.count < 2 { (0.0, 0.0) } else { ((cosine - spread.mean) / unit, (cosine - best_other) / unit) };
    [lexical.unwrap_or(NO_LEXICAL_LOGIT), f64::from(u8::from(lexical.is_some())), z_score, margin]
}

/// The lexical log-odds of the candidate at `position` under `coefficients`, as
/// [`semantic_features`] takes them (`None` for a candidate the matcher gave no score).
pub fn lexical_logit(query: &Query, position: usize, coefficients: &[f64; N_FEATURES + 1]) -> Option<f64> {
    (query.ranked[position].score > 0.0).then(|| logit(coefficients, &features(query, position)))
}

/// The log-odds under `coefficients`.
pub fn logit<const F: usize, const W: usize>(coefficients: &[f64; W], features: &[f64; F]) -> f64 {
    debug_assert_eq!(W, F + 1);
    coefficients[0] + coefficients[1..].iter().zip(features).map(|(weight, x)| weight * x).sum::<f64>()
}

/// The shipped confidence of a candidate.
pub fn confidence(query: &Query, position: usize) -> f32 {
    probability(&COEFFICIENTS, &features(query, position)) as f32
}

/// Fits the coefficients to labelled feature vectors: L2-regularised (`l2`, not on the bias)
/// logistic regression by Newton's method, which converges in a few dozen steps at this size.
/// `W` is one more than `F`: the bias.
pub fn fit<const F: usize, const W: usize>(samples: &[([f64; F], bool)], l2: f64) -> [f64; W] {
    assert_eq!(W, F + 1, "one weight per feature and the bias");
    let mut weights = [0.0_f64; W];
    for _ in 0..100 {
        let mut gradient = [0.0_f64; W];
        let mut hessian = [[0.0_f64; W]; W];
        for (features, label) in samples {
            let mut x = [1.0_f64; W];
            x[1..].copy_from_slice(features);
            let p = probability(&weights, features);
            let error = p - f64::from(u8::from(*label));
            let curvature = (p * (1.0 - p)).max(1e-9);
            for i in 0..W {
                gradient[i] += error * x[i];
                for j in 0..W {
                    hessian[i][j] += curvature * x[i] * x[j];
                }
            }
        }
        for i in 1..W {
            gradient[i] += l2 * weights[i];
            hessian[i][i] += l2;
        }
        hessian[0][0] += 1e-6;
        let Some(step) = solve(hessian, gradient) else {
            break;
        };
        let mut largest = 0.0_f64;
        for i in 0..W {
            weights[i] -= step[i];
            largest = largest.max(step[i].abs());
        }
        if largest < 1e-9 {
            break;
        }
    }
    weights
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for column in 0..N {
        let pivot = (column..N).max_by(|x, y| a[*x][column].abs().total_cmp(&a[*y][column].abs()))?;
        if a[pivot][column].abs() < 1e-12 {
            return None;
        }
        a.swap(column, pivot);
        b.swap(column, pivot);
        let pivot_row = a[column];
        for row in column + 1..N {
            let factor = a[row][column] / pivot_row[column];
            for (value, above) in a[row][column..].iter_mut().zip(&pivot_row[column..]) {
                *value -= factor * above;
            }
            b[row] -= factor * b[column];
        }
    }
    let mut x = [0.0_f64; N];
    for row in (0..N).rev() {
        let rest: f64 = (row + 1..N).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_separates_what_can_be_separated() {
        let mut samples = Vec::new();
        for step in 0..100 {
            let score = step as f64 / 100.0;
            let mut features = [0.0; N_FEATURES];
            features[0] = score;
            samples.push((features, score > 0.5 || step % 10 == 0));
        }
        let coefficients: [f64; N_FEATURES + 1] = fit(&samples, 0.01);
        let low = probability(&coefficients, &{
            let mut features = [0.0; N_FEATURES];
            features[0] = 0.1;
            features
        });
        let high = probability(&coefficients, &{
            let mut features = [0.0; N_FEATURES];
            features[0] = 0.9;
            features
        });
        assert!(low < 0.3 && high > 0.7, "{low} {high} {coefficients:?}");
    }

    #[test]
    fn a_cosine_is_placed_among_the_sites_entries() {
        let spread = CosineSpread::of([0.80_f32, 0.84, 0.90, 0.82].into_iter());
        assert!((spread.best - 0.90).abs() < 1e-6 && (spread.second - 0.84).abs() < 1e-6);
        let best = semantic_features(Some(1.5), 0.90, &spread);
        let runner_up = semantic_features(None, 0.84, &spread);
        assert_eq!((best[0], best[1]), (1.5, 1.0));
        assert_eq!((runner_up[0], runner_up[1]), (NO_LEXICAL_LOGIT, 0.0));
        // The best entry's margin is over the second, a runner-up's (negative) over the best.
        assert!(best[2] > runner_up[2] && best[3] > 0.0 && runner_up[3] < 0.0);
        assert!((best[3] + runner_up[3]).abs() < 1e-5);
    }

    #[test]
    fn a_site_of_one_or_no_entries_or_equal_cosines_gets_finite_features() {
        for cosines in [vec![], vec![0.9_f32], vec![0.85, 0.85, 0.85]] {
            let spread = CosineSpread::of(cosines.iter().copied());
            let features = semantic_features(Some(0.0), 0.85, &spread);
            assert!(features.iter().all(|feature| feature.is_finite()), "{cosines:?}: {features:?}");
            let confidence = probability(&SEMANTIC_COEFFICIENTS, &features);
            assert!((0.0..=1.0).contains(&confidence));
        }
        // Close cosines over a few entries are not read as a clear winner.
        let spread = CosineSpread::of([0.851_f32, 0.850].into_iter());
        let features = semantic_features(None, 0.851, &spread);
        assert!(features[3] < 0.1, "{features:?}");
    }
}
