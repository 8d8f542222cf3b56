//! Figures: samples per runtime, their medians, spread and the rshim/Go ratio.

use rshim_integration::Runtime;

/// One measured quantity, with every sample of both runtimes.
pub struct Figure {
    pub group: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub go: Vec<f64>,
    pub rshim: Vec<f64>,
    /// Also show the 95th percentile (latencies).
    pub p95: bool,
    /// Throughput: a ratio above 1 is rshim's gain.
    pub higher_is_better: bool,
}

impl Figure {
    pub fn new(group: &'static str, name: impl Into<String>, unit: &'static str) -> Figure {
        Figure {
            group,
            name: name.into(),
            unit,
            go: Vec::new(),
            rshim: Vec::new(),
            p95: false,
            higher_is_better: false,
        }
    }

    pub fn throughput(mut self) -> Figure {
        self.higher_is_better = true;
        self
    }

    pub fn latency(mut self) -> Figure {
        self.p95 = true;
        self
    }

    pub fn push(&mut self, rt: Runtime, value: f64) {
        match rt {
            Runtime::Go => self.go.push(value),
            Runtime::Rshim => self.rshim.push(value),
        }
    }

    pub fn samples(&self, rt: Runtime) -> &[f64] {
        match rt {
            Runtime::Go => &self.go,
            Runtime::Rshim => &self.rshim,
        }
    }

    /// rshim's median over Go's.
    pub fn ratio(&self) -> Option<f64> {
        let (r, g) = (median(&self.rshim)?, median(&self.go)?);
        (g != 0.0).then_some(r / g)
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    percentile(v, 50.0)
}

/// Nearest-rank percentile.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

/// Interquartile range over the median, in percent: how noisy a figure is.
pub fn spread(v: &[f64]) -> Option<f64> {
    let (q1, q3, m) = (percentile(v, 25.0)?, percentile(v, 75.0)?, median(v)?);
    (m != 0.0).then_some(100.0 * (q3 - q1) / m)
}

fn cell(v: &[f64], p95: bool) -> String {
    let Some(m) = median(v) else {
        return "-".into();
    };
    let mut s = fmt(m);
    if p95 {
        s.push_str(&format!(" (p95 {})", fmt(percentile(v, 95.0).unwrap_or(m))));
    }
    if v.len() > 1 {
        s.push_str(&format!(" ±{:.0}%", spread(v).unwrap_or(0.0)));
    }
    s
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The markdown table: median (p95 for latencies) ± interquartile spread, samples, ratio.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| figure | unit | Go shim | rshim | n | rshim/Go |\n|---|---|---|---|---|---|\n",
    );
    for f in figures {
        out.push_str(&format!(
            "| {}: {} | {} | {} | {} | {}+{} | {} |\n",
            f.group,
            f.name,
            f.unit,
            cell(&f.go, f.p95),
            cell(&f.rshim, f.p95),
            f.go.len(),
            f.rshim.len(),
            f.ratio()
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into())
        ));
    }
    out
}

/// Every sample: `group,figure,unit,runtime,index,value`.
pub fn csv(figures: &[Figure]) -> String {
    let mut out = String::from("group,figure,unit,runtime,index,value\n");
    for f in figures {
        for rt in [Runtime::Go, Runtime::Rshim] {
            for (i, v) in f.samples(rt).iter().enumerate() {
                out.push_str(&format!(
                    "{},\"{}\",{},{},{i},{v}\n",
                    f.group,
                    f.name.replace('"', "'"),
                    f.unit,
                    rt.name()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_ratio() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(median(&v), Some(3.0));
        assert_eq!(percentile(&v, 95.0), Some(5.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(median(&[]), None);
        let mut f = Figure::new("g", "x", "ms");
        f.go = vec![10.0, 20.0];
        f.rshim = vec![5.0];
        assert_eq!(f.ratio(), Some(0.5));
        assert!(table(&[f]).contains("| g: x | ms | 10.0 ±100% | 5.00 | 2+1 | 0.50 |"));
    }
}
