//! SVG and PNG of a [`TrafficGraph`], drawn in-process: layout-rs lays the graph out and writes
//! SVG, resvg (on tiny-skia) rasterises that SVG to PNG with the system's fonts. No graphviz.
//!
//! layout-rs draws no cluster boxes, so each node shows its namespace under its name and every
//! group has its own fill colour.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::StyleAttr;
use layout::std_shapes::render::get_shape_size;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;
use resvg::tiny_skia;
use resvg::usvg;

use crate::cli::error::CliError;
use crate::cli::visualize::{Group, TrafficGraph, ports_label};

/// Node fill colours (RGBA), one per group in turn.
const GROUP_FILLS_RGBA: [u32; 8] = [
    0xdbe9f6ff, 0xe2f0d9ff, 0xfdebd3ff, 0xeadcf2ff, 0xd9f2efff, 0xf8dde4ff, 0xf2f2d0ff, 0xe6e6e6ff,
];
/// Fill of internet nodes.
const INTERNET_FILL_RGBA: u32 = 0xfff4ccff;
/// Label size of nodes and edges, in pixels.
const FONT_SIZE_PX: usize = 14;
/// Serif families tried, in order, for the `Times, serif` layout-rs asks for.
const SERIF_FALLBACKS: [&str; 3] = ["DejaVu Serif", "Liberation Serif", "Noto Serif"];

/// The graph as SVG.
pub fn to_svg(graph: &TrafficGraph) -> Result<String, CliError> {
    if graph.is_empty() {
        return Ok(EMPTY_SVG.to_string());
    }
    let orientation = Orientation::TopToBottom;
    let mut visual = VisualGraph::new(orientation);
    let mut handles = BTreeMap::new();
    for (index, (group, nodes)) in graph.groups.iter().enumerate() {
        let fill = match group {
            Group::Internet => INTERNET_FILL_RGBA,
            _ => GROUP_FILLS_RGBA[index % GROUP_FILLS_RGBA.len()],
        };
        for node in nodes {
            let label = format!("{}\n[{}]", node.name, group.label());
            let shape = ShapeKind::new_box(&label);
            let look = StyleAttr::new(
                Color::fast("black"),
                1,
                Some(Color::new(fill)),
                6,
                FONT_SIZE_PX,
            );
            let size = get_shape_size(orientation, &shape, FONT_SIZE_PX, false);
            let handle = visual.add_node(Element::create(shape, look, orientation, size));
            handles.insert(node.clone(), handle);
        }
    }
    for ((from, to), ports) in &graph.edges {
        if let (Some(from), Some(to)) = (handles.get(from), handles.get(to)) {
            visual.add_edge(Arrow::simple(&ports_label(ports)), *from, *to);
        }
    }
    let mut writer = SVGWriter::new();
    catch_unwind(AssertUnwindSafe(|| {
        visual.do_it(false, false, false, &mut writer);
    }))
    .map_err(|_| {
        CliError::Draw("the layout engine failed on this graph; use --format dot".into())
    })?;
    Ok(writer.finalize())
}

/// What an empty map draws.
const EMPTY_SVG: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="60" viewBox="0 0 320 60">
<rect width="320" height="60" fill="white"/>
<text x="160" y="35" text-anchor="middle" font-family="sans-serif" font-size="16">No traffic observed yet.</text>
</svg>
"#;

/// Rasterises SVG text to PNG bytes on a white background.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, CliError> {
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    let installed: Vec<String> = fonts
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
        .collect();
    let serif = SERIF_FALLBACKS
        .iter()
        .map(|s| s.to_string())
        .find(|s| installed.contains(s))
        .or_else(|| installed.first().cloned());
    if let Some(family) = serif {
        fonts.set_serif_family(family.clone());
        fonts.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_str(svg, &options)
        .map_err(|e| CliError::Draw(format!("the SVG does not parse: {e}")))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| CliError::Draw(format!("cannot allocate {size:?} pixels")))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map_err(|e| CliError::Draw(format!("cannot encode PNG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::{client, internet, target};

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

    fn graph() -> TrafficGraph {
        TrafficGraph::build(&[
            client(
                "checkout",
                "shop",
                vec![target("cart", "shop", 7070), target("ledger", "pay", 9090)],
                vec![internet(Some("api.stripe.com"), &[], 443)],
            ),
            client(
                "web",
                "shop",
                vec![target("checkout", "shop", 5050)],
                vec![],
            ),
            // A workload calling itself, and a cycle.
            client(
                "cart",
                "shop",
                vec![target("cart", "shop", 7070), target("web", "shop", 80)],
                vec![],
            ),
        ])
    }

    #[test]
    fn svg_names_every_workload_and_port() {
        let svg = to_svg(&graph()).expect("svg");
        assert!(svg.contains("<svg"), "{svg}");
        for text in [
            "checkout",
            "ledger",
            "[pay]",
            "api.stripe.com",
            "7070/TCP",
            "443/TCP",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn png_is_rendered_from_the_svg() {
        let png = svg_to_png(&to_svg(&graph()).expect("svg")).expect("png");
        assert!(png.starts_with(PNG_MAGIC));
        assert!(png.len() > 1000);
    }

    #[test]
    fn an_empty_map_still_draws() {
        let svg = to_svg(&TrafficGraph::default()).expect("svg");
        assert!(svg.contains("No traffic observed yet."));
        assert!(svg_to_png(&svg).expect("png").starts_with(PNG_MAGIC));
    }
}
