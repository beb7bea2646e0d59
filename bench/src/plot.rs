//! The per-packet cost plot (PNG): agent and baseline ns per case, ratio beside each bar.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use serde_json::Value;

/// Fonts are read from the system (Debian: fonts-dejavu-core), not embedded.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn load_font() -> Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            anyhow!("no DejaVuSans.ttf for the plot (apt-get install fonts-dejavu-core)")
        })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path}: not a usable font"))?;
    Ok(())
}

pub fn per_packet(summary: &Value, png: &Path) -> Result<()> {
    load_font()?;
    let cases: Vec<&Value> = summary["xdp"]["cases"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let n = cases.len();
    let (w, h) = (1100u32, 150 + 44 * n as u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let max = cases
        .iter()
        .map(|c| num(&c["ns"]).max(num(&c["baseline_ns"])))
        .fold(1.0, f64::max)
        * 1.25;
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "hbwatch XDP per-packet cost (BPF_PROG_TEST_RUN, median ns; ratio vs empty XDP program)",
                ("sans-serif", 18),
            )
            .margin(12)
            .margin_left(230)
            .margin_bottom(30)
            .x_label_area_size(40)
            .build_cartesian_2d(0f64..max, 0f64..n as f64)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("ns per packet (new association: one run per call, clock reads included)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let blue = RGBColor(52, 101, 164);
        let grey = RGBColor(170, 170, 170);
        for (i, c) in cases.iter().enumerate() {
            // Top to bottom in table order.
            let y = (n - 1 - i) as f64;
            let (agent, base) = (num(&c["ns"]), num(&c["baseline_ns"]));
            chart
                .draw_series([
                    Rectangle::new([(0.0, y + 0.52), (agent, y + 0.88)], blue.filled()),
                    Rectangle::new([(0.0, y + 0.14), (base, y + 0.46)], grey.filled()),
                ])
                .map_err(|e| anyhow!("{e}"))?;
            let label = match c["target"].as_f64() {
                Some(t) => format!("{:.2}x (target <= {t}x)", num(&c["ratio"])),
                None => format!("{:.2}x", num(&c["ratio"])),
            };
            chart
                .draw_series([Text::new(
                    label,
                    (agent + max * 0.01, y + 0.78),
                    ("sans-serif", 13).into_font(),
                )])
                .map_err(|e| anyhow!("{e}"))?;
            let (px, py) = chart.backend_coord(&(0.0, y + 0.62));
            root.draw_text(
                c["name"].as_str().unwrap_or("?"),
                &("sans-serif", 14).into_font().color(&BLACK),
                (px - 220, py - 7),
            )
            .map_err(|e| anyhow!("{e}"))?;
        }
        root.draw_text(
            "blue: hbwatch_xdp (floor: a program doing only that)   grey: empty XDP_PASS program, same frame, same trial",
            &("sans-serif", 13).into_font().color(&BLACK),
            (230, h as i32 - 22),
        )
        .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let file = std::fs::File::create(png).with_context(|| format!("creating {}", png.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&buf)?;
    Ok(())
}
