//! The PNG chart of a `rampart bench compare` run, drawn with plotters'
//! bitmap backend and an embedded DejaVu Sans (no system fonts needed).
//!
//! Three panels, top to bottom:
//! 1. pub/sub throughput over TCP+TLS: Rampart and the peer per workload,
//!    msg/s on a log scale;
//! 2. latency at fixed rates: Rampart and the peer per rate and percentile,
//!    microseconds on a log scale;
//! 3. Rampart's advantage over the peer for every row with an aim and for
//!    the durable, cache, vault and memory rows (log scale; 1x = even, right of it
//!    = Rampart better), the aim marked on each bar.

use std::path::Path;

use plotters::prelude::*;

use super::Row;
use crate::Failure;

const WIDTH: u32 = 1600;
/// Axis units per group of bars (integer coordinates keep plotters'
/// default label formatting).
const SLOT: i32 = 100;
const PANEL: u32 = 640;
const RAMPART: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const RAMPART_QUIC: RGBColor = RGBColor(0x6b, 0xae, 0xd6);
const PEER: RGBColor = RGBColor(0xd6, 0x61, 0x2b);
const MET: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const MISSED: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// A chart error as a [`Failure`].
fn failed(e: impl std::fmt::Display) -> Failure {
    Failure(format!("drawing the chart: {e}"))
}

/// Registers the embedded font once per process.
fn font() -> Result<(), Failure> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Failure("the embedded font did not load".into()))
    }
}

/// One group of bars: a label and (series, value) pairs.
struct Group {
    label: String,
    bars: Vec<(usize, f64)>,
}

/// Grouped bars on a log scale. `series`: name and color of each series.
fn bars(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    series: &[(String, RGBColor)],
    groups: &[Group],
) -> Result<(), Failure> {
    if groups.is_empty() {
        return Ok(());
    }
    let values = groups.iter().flat_map(|g| g.bars.iter().map(|b| b.1));
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return Ok(());
    }
    let (lo, hi) = (lo / 2.0, hi * 2.0);
    let n = groups.len();
    let keys: Vec<i32> = (0..n as i32).map(|i| i * SLOT + SLOT / 2).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(90)
        .build_cartesian_2d(
            (0..n as i32 * SLOT).with_key_points(keys),
            (lo..hi).log_scale(),
        )
        .map_err(failed)?;
    let label = |x: &i32| {
        let i = usize::try_from(x / SLOT).unwrap_or(0);
        groups.get(i).map(|g| g.label.clone()).unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&label)
        .x_label_style(("sans-serif", 13))
        .y_desc(unit)
        .y_label_formatter(&|v| si(*v))
        .draw()
        .map_err(failed)?;
    let width = SLOT * 8 / 10 / series.len() as i32;
    for (s, (name, color)) in series.iter().enumerate() {
        let color = *color;
        let rects: Vec<_> = groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                g.bars
                    .iter()
                    .filter(move |(k, v)| *k == s && v.is_finite() && *v > 0.0)
                    .map(move |&(_, v)| {
                        let x0 = i as i32 * SLOT + SLOT / 10 + s as i32 * width;
                        Rectangle::new([(x0, lo), (x0 + width * 9 / 10, v)], color.filled())
                    })
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(failed)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(failed)?;
    Ok(())
}

/// The rows of one section, grouped by workload, with the peer's figure
/// once per workload.
fn groups_of(rows: &[Row], sections: &[&str], label: impl Fn(&Row) -> String) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for r in rows {
        let Some(s) = sections.iter().position(|s| r.section == *s) else {
            continue;
        };
        let l = label(r);
        let g = match out.iter_mut().position(|g| g.label == l) {
            Some(i) => &mut out[i],
            None => {
                out.push(Group {
                    label: l,
                    bars: vec![(sections.len(), r.peer_value)],
                });
                out.last_mut().expect("just pushed")
            }
        };
        g.bars.push((s, r.rampart));
    }
    out
}

/// The rows shown in the advantage panel.
fn advantage_rows(rows: &[Row]) -> Vec<&Row> {
    rows.iter()
        .filter(|r| {
            r.aim.is_some()
                || !(r.section.starts_with("pubsub") || r.section.starts_with("latency"))
        })
        .filter(|r| r.advantage().is_finite() && r.advantage() > 0.0)
        .collect()
}

/// The 1-2-5 steps of each decade between `lo` and `hi`, for a log axis
/// whose labels must not run into each other.
fn decade_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (first..=last)
        .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .collect()
}

fn advantage(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    rows: &[&Row],
) -> Result<(), Failure> {
    if rows.is_empty() {
        return Ok(());
    }
    let hi = rows
        .iter()
        .map(|r| r.advantage().max(r.aim.unwrap_or(0.0)))
        .fold(1.0f64, f64::max)
        * 2.0;
    let lo = rows.iter().map(|r| r.advantage()).fold(1.0f64, f64::min) / 2.0;
    let n = rows.len();
    let keys: Vec<i32> = (0..n as i32).map(|i| i * SLOT + SLOT / 2).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Rampart's advantage over the peer (x; right of 1 = Rampart better; | = aim)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(720)
        .build_cartesian_2d(
            (lo..hi).log_scale().with_key_points(decade_ticks(lo, hi)),
            (0..n as i32 * SLOT).with_key_points(keys),
        )
        .map_err(failed)?;
    let label = |y: &i32| {
        let i = usize::try_from(y / SLOT).unwrap_or(0);
        rows.get(n.saturating_sub(i + 1))
            .map(|r| format!("{} {} vs {}", r.section, r.workload, r.peer))
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&label)
        .y_label_style(("sans-serif", 12))
        .x_label_formatter(&|v| format!("{v}x"))
        .draw()
        .map_err(failed)?;
    // Top to bottom in report order.
    let at = |i: usize| (n - 1 - i) as i32 * SLOT;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let color = match r.aim_met() {
                Some(true) => MET,
                Some(false) => MISSED,
                None => RAMPART,
            };
            Rectangle::new(
                [
                    (lo, at(i) + SLOT * 15 / 100),
                    (r.advantage(), at(i) + SLOT * 85 / 100),
                ],
                color.filled(),
            )
        }))
        .map_err(failed)?;
    chart
        .draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
            r.aim.map(|a| {
                PathElement::new(
                    vec![(a, at(i) + SLOT / 20), (a, at(i) + SLOT * 95 / 100)],
                    BLACK.stroke_width(3),
                )
            })
        }))
        .map_err(failed)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0), (1.0, n as i32 * SLOT)],
            BLACK.stroke_width(1),
        )))
        .map_err(failed)?;
    Ok(())
}

/// An axis figure: 950, 12k, 3.4M.
fn si(v: f64) -> String {
    match v.abs() {
        a if a >= 1e6 => format!("{}M", super::figure(v / 1e6)),
        a if a >= 1e3 => format!("{}k", super::figure(v / 1e3)),
        _ => super::figure(v),
    }
}

/// Draws the chart of `rows` to `path` (PNG); `subtitle` names the machine.
/// Panels without rows are left out.
pub(super) fn draw(path: &Path, rows: &[Row], subtitle: &str) -> Result<(), Failure> {
    font()?;
    let peer = rows
        .iter()
        .find(|r| r.section.starts_with("pubsub") || r.section.starts_with("latency"))
        .map_or("NATS".to_string(), |r| r.peer.clone());
    let series = [
        ("Rampart TCP+TLS".to_string(), RAMPART),
        ("Rampart QUIC".to_string(), RAMPART_QUIC),
        (peer, PEER),
    ];
    let throughput = groups_of(rows, &["pubsub TCP+TLS", "pubsub QUIC"], |r| {
        r.workload.clone()
    });
    let latency = groups_of(rows, &["latency TCP+TLS", "latency QUIC"], |r| {
        // "p99 at 438996 msg/s (0.5x NATS max)" -> "p99 @0.5x"
        let (q, rest) = r.workload.split_once(" at ").unwrap_or((&r.workload, ""));
        let share = rest
            .split_once('(')
            .and_then(|(_, s)| s.split_once(' '))
            .map_or("", |(s, _)| s);
        format!("{q} @{share}")
    });
    let adv = advantage_rows(rows);
    let adv_height = if adv.is_empty() {
        0
    } else {
        (adv.len() as u32 * 26 + 120).max(300)
    };
    let heights = [
        60,
        if throughput.is_empty() { 0 } else { PANEL },
        if latency.is_empty() { 0 } else { PANEL },
        adv_height,
    ];
    let root = BitMapBackend::new(path, (WIDTH, heights.iter().sum())).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let (head, rest) = root.split_vertically(heights[0]);
    head.draw(&Text::new(
        format!("rampart bench compare: {subtitle}"),
        (12, 18),
        ("sans-serif", 20),
    ))
    .map_err(failed)?;
    let (top, rest) = rest.split_vertically(heights[1]);
    let (middle, bottom) = rest.split_vertically(heights[2]);
    bars(
        &top,
        "Pub/sub delivered msg/s (N publishers -> M subscribers, payload size)",
        "msg/s",
        &series,
        &throughput,
    )?;
    bars(
        &middle,
        "1->1 128 B latency at fixed rates (@ share of the peer's best rate), lower is better",
        "microseconds",
        &series,
        &latency,
    )?;
    advantage(&bottom, &adv)?;
    root.present().map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Better;
    use super::*;

    fn row(section: &str, workload: &str, rampart: f64, peer: f64, aim: Option<f64>) -> Row {
        Row {
            section: section.into(),
            workload: workload.into(),
            unit: "msg/s",
            better: Better::Higher,
            rampart,
            peer: "NATS (TLS)".into(),
            peer_value: peer,
            rampart_detail: String::new(),
            peer_detail: String::new(),
            aim,
            aim_terms_held: true,
        }
    }

    #[test]
    fn groups_put_the_peer_once_per_workload() {
        let rows = [
            row("pubsub TCP+TLS", "1->1 128 B", 10.0, 5.0, Some(1.5)),
            row("pubsub QUIC", "1->1 128 B", 8.0, 5.0, None),
            row("vault", "read", 100.0, 10.0, Some(10.0)),
        ];
        let g = groups_of(&rows, &["pubsub TCP+TLS", "pubsub QUIC"], |r| {
            r.workload.clone()
        });
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].bars, vec![(2, 5.0), (0, 10.0), (1, 8.0)]);
        let adv = advantage_rows(&rows);
        assert_eq!(adv.len(), 2, "the QUIC row has no aim");
    }

    #[test]
    fn advantage_ticks_are_one_two_five_per_decade() {
        assert_eq!(
            decade_ticks(0.3, 30.0),
            vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
        );
        assert_eq!(decade_ticks(0.5, 1.9), vec![0.5, 1.0]);
        let labels: Vec<String> = decade_ticks(0.05, 12.0)
            .iter()
            .map(|v| format!("{v}x"))
            .collect();
        assert_eq!(
            labels,
            ["0.05x", "0.1x", "0.2x", "0.5x", "1x", "2x", "5x", "10x"]
        );
    }

    #[test]
    fn draws_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compare.png");
        let mut lat = row(
            "latency TCP+TLS",
            "p99 at 1000 msg/s (0.5x NATS max)",
            900.0,
            1200.0,
            Some(1.0),
        );
        lat.better = Better::Lower;
        let rows = [
            row("pubsub TCP+TLS", "1->1 128 B", 10.0, 5.0, Some(1.5)),
            row("pubsub QUIC", "1->1 128 B", 8.0, 5.0, None),
            lat,
            row("vault", "read", 100.0, 10.0, Some(10.0)),
        ];
        draw(&path, &rows, "2 CPUs, test").unwrap();
        let png = std::fs::read(&path).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG file");
        assert!(png.len() > 10_000, "{} bytes", png.len());
        assert_eq!(si(950.0), "950");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(3_400_000.0), "3.40M");
    }
}
