//! One line of the report: `name value goal pass|FAIL`.

use std::fmt;

/// Which side of the goal passes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goal {
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be at most this.
    AtMost(f64),
}

impl Goal {
    fn holds(self, value: f64) -> bool {
        match self {
            Self::AtLeast(goal) => value >= goal,
            Self::AtMost(goal) => value <= goal,
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AtLeast(goal) => write!(f, ">={goal}"),
            Self::AtMost(goal) => write!(f, "<={goal}"),
        }
    }
}

/// A measured (or unmeasurable) figure with its goal and the absolute numbers behind it.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// The figure's name.
    pub name: String,
    /// The value; `None` when it cannot be measured (then it fails, with `reason`).
    pub value: Option<f64>,
    /// The goal.
    pub goal: Goal,
    /// Absolute measurements behind the ratio, printed as a comment line.
    pub detail: String,
    /// Why there is no value.
    pub reason: Option<String>,
}

impl Figure {
    /// A measured figure.
    pub(crate) fn measured(name: &str, value: f64, goal: Goal, detail: String) -> Self {
        Self {
            name: name.to_owned(),
            value: Some(value),
            goal,
            detail,
            reason: None,
        }
    }

    /// A figure that could not be measured: printed as `n/a` and `FAIL`.
    pub(crate) fn unavailable(name: &str, goal: Goal, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            value: None,
            goal,
            detail: String::new(),
            reason: Some(reason.into()),
        }
    }

    /// Whether the goal holds.
    pub(crate) fn passes(&self) -> bool {
        self.value.is_some_and(|v| self.goal.holds(v))
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self
            .value
            .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
        let verdict = if self.passes() { "pass" } else { "FAIL" };
        write!(f, "{} {value} {} {verdict}", self.name, self.goal)?;
        if !self.detail.is_empty() {
            write!(f, "\n#   {}", self.detail)?;
        }
        if let Some(reason) = &self.reason {
            write!(f, "\n#   reason: {reason}")?;
        }
        Ok(())
    }
}
