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
    // below for a runner-up, which the fused ranking orders by it too. A candidate with no
    // lexical score (found by meaning alone) gets 0: the lexical margin says nothing of it.
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
pub fn probability(coefficients: &[f64; N_FEATURES + 1], features: &[f64; N_FEATURES]) -> f64 {
    1.0 / (1.0 + (-logit(coefficients, features)).exp())
}

/// How much the semantic tier's cosine moves a candidate's log-odds, per unit of cosine above
/// [`SEMANTIC_CENTER`]. Set by hand, not fitted: no embeddings model is reachable where the
/// calibration is fitted. A cosine of 0.9 adds 1.2 to the log-odds, one of 0.5 takes 2 away.
pub const SEMANTIC_WEIGHT: f64 = 8.0;

/// The cosine at which the semantic tier neither raises nor lowers a candidate's confidence.
pub const SEMANTIC_CENTER: f64 = 0.75;

/// How many of the entries most similar in meaning join the lexical candidates.
pub const SEMANTIC_DEPTH: usize = 3;

/// The confidence with the semantic tier's cosine for the candidate, when it has one.
pub fn fused_confidence(query: &Query, position: usize, cosine: Option<f32>) -> f32 {
    let lexical = logit(&COEFFICIENTS, &features(query, position));
    let semantic = cosine.map_or(0.0, |cosine| SEMANTIC_WEIGHT * (f64::from(cosine) - SEMANTIC_CENTER));
    (1.0 / (1.0 + (-(lexical + semantic)).exp())) as f32
}

/// The log-odds under `coefficients`.
fn logit(coefficients: &[f64; N_FEATURES + 1], features: &[f64; N_FEATURES]) -> f64 {
    coefficients[0] + coefficients[1..].iter().zip(features).map(|(weight, x)| weight * x).sum::<f64>()
}

/// The shipped confidence of a candidate.
pub fn confidence(query: &Query, position: usize) -> f32 {
    probability(&COEFFICIENTS, &features(query, position)) as f32
}

/// Fits the coefficients to labelled feature vectors: L2-regularised (`l2`, not on the bias)
/// logistic regression by Newton's method, which converges in a few dozen steps at this size.
pub fn fit(samples: &[([f64; N_FEATURES], bool)], l2: f64) -> [f64; N_FEATURES + 1] {
    const N: usize = N_FEATURES + 1;
    let mut weights = [0.0_f64; N];
    for _ in 0..100 {
        let mut gradient = [0.0_f64; N];
        let mut hessian = [[0.0_f64; N]; N];
        for (features, label) in samples {
            let mut x = [1.0_f64; N];
            x[1..].copy_from_slice(features);
            let p = probability(&weights, features);
            let error = p - f64::from(u8::from(*label));
            let curvature = (p * (1.0 - p)).max(1e-9);
            for i in 0..N {
                gradient[i] += error * x[i];
                for j in 0..N {
                    hessian[i][j] += curvature * x[i] * x[j];
                }
            }
        }
        for i in 1..N {
            gradient[i] += l2 * weights[i];
            hessian[i][i] += l2;
        }
        hessian[0][0] += 1e-6;
        let Some(step) = solve(hessian, gradient) else {
            break;
        };
        let mut largest = 0.0_f64;
        for i in 0..N {
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
        let coefficients = fit(&samples, 0.01);
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
}
