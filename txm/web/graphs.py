"""Line graphs of a unit's channels, drawn with pygal as inline SVG.

A unit's graph options (admin panel): ``graph_width`` and ``graph_height`` in pixels, and
``graph_axes`` -- a list of axes, each with a label and the channels it shows. No axes
configured means one axis with every channel. pygal draws at most two value axes on one
chart (left and right), so axes come in pairs: the first on the left of chart one, the second
on its right, the third on the left of chart two, and so on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pygal
from pygal.etree import etree
from pygal.style import Style

from txm.db import schema
from txm.export.stats import Series, check_channels

STYLE = Style(background="#ffffff", plot_background="#ffffff", foreground="#1d2329",
              foreground_strong="#1d2329", foreground_subtle="#d8dee4", opacity=".9", opacity_hover="1",
              colors=("#0b5cad", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d"),
              font_family="system-ui, sans-serif")


@dataclass(frozen=True)
class Axis:
    label: str
    channels: list[int]


def unit_axes(unit: schema.Unit) -> list[Axis]:
    """The unit's axes with channel numbers that exist; one axis of every channel when none are set."""
    axes = []
    for entry in unit.graph_axes or []:
        if not isinstance(entry, dict):
            continue
        channels = check_channels(unit, [n for n in entry.get("channels") or [] if isinstance(n, int)])
        if channels:
            axes.append(Axis(str(entry.get("label") or ""), channels))
    return axes or [Axis("", list(range(1, unit.channels + 1)))]


def graph_channels(axes: list[Axis]) -> list[int]:
    seen: list[int] = []
    for axis in axes:
        seen += [n for n in axis.channels if n not in seen]
    return seen


def _when(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def render_graphs(unit: schema.Unit, series: Series, axes: list[Axis]) -> list[str]:
    """SVG documents (text, no XML declaration, no scripts) of the unit's graphs."""
    labels = unit.channel_labels()
    width = max(200, min(int(unit.graph_width or 800), 4000))
    height = max(150, min(int(unit.graph_height or 400), 3000))
    charts = []
    for pair in (axes[i:i + 2] for i in range(0, len(axes), 2)):
        chart = pygal.DateTimeLine(
            width=width, height=height, style=STYLE, js=[], disable_xml_declaration=True,
            show_dots=False, stroke_style={"width": 1.5}, x_label_rotation=20, truncate_label=-1,
            truncate_legend=-1, legend_at_bottom=True, legend_at_bottom_columns=3, show_x_guides=False,
            x_value_formatter=_when, y_title=pair[0].label or None, allow_interruptions=True,
            dynamic_print_values=False, print_values=False, show_minor_x_labels=False, x_labels_major_count=6,
        )
        for index, axis in enumerate(pair):
            for n in axis.channels:
                title = labels[n - 1]
                if index == 1:
                    title = f"{title} (right axis{': ' + axis.label if axis.label else ''})"
                chart.add(title, series.lines.get(n, []), secondary=index == 1)
        charts.append(_svg_without_scripts(chart))
    return charts


def _svg_without_scripts(chart: pygal.graph.graph.Graph) -> str:
    """The chart's SVG with pygal's inline ``<script>`` (its tooltip config, holding the labels
    as JSON) removed: the page runs no pygal JavaScript, and an inline script carrying
    user-provided labels is nothing to put in a page."""
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    text = etree.tostring(tree, encoding="unicode")
    return text
