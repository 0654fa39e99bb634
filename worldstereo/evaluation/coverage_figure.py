"""The coverage comparison of the planners: completeness after k trajectories on the synthetic suite (oracle
generator), as JSON and as a PNG plot (one panel per scene, one line per planner)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from worldstereo.config import Settings, with_overrides
from worldstereo.evaluation.suite import evaluate_case, synthetic_cases

PLANS = {"presets (paper)": ("presets", "paper"), "presets (release)": ("presets", "release"),
         "explore": ("explore", "paper")}
COLOURS = {"presets (paper)": (220, 60, 40), "presets (release)": (40, 110, 220), "explore": (30, 160, 60)}


def coverage_curves(settings: Settings, trajectories: int = 8) -> dict[str, dict[str, list[float]]]:
    """``{scene: {plan: [completeness after k = 0..trajectories]}}`` of every synthetic scene and plan."""
    curves: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in synthetic_cases(Path(tmp) / "samples"):
            for label, (planner, preset_set) in PLANS.items():
                run = with_overrides(settings, {"trajectory": {"planner": planner, "preset_set": preset_set,
                                                               "max_trajectories": trajectories}})
                row = evaluate_case(case, run, Path(tmp) / label.replace(" ", "_"), coverage=True)
                curves.setdefault(case.name, {})[label] = [step.completeness for step in row.coverage]
    return curves


def coverage_png(curves: dict[str, dict[str, list[float]]], panel: int = 300) -> bytes:
    """One panel per scene: completeness (0..1, y) against trajectories k (x), a line per plan, a legend below."""
    margin, legend = 36, 22 * len(PLANS)
    image = Image.new("RGB", (panel * len(curves), panel + legend), "white")
    draw = ImageDraw.Draw(image)
    for index, (scene, plans) in enumerate(curves.items()):
        left = index * panel
        x0, x1, y0, y1 = left + margin, left + panel - 10, panel - margin, 24
        draw.text((left + margin, 6), scene, fill="black")
        draw.rectangle((x0, y1, x1, y0), outline=(160, 160, 160))
        steps = max(len(values) for values in plans.values()) - 1
        for tick in range(steps + 1):
            x = x0 + (x1 - x0) * tick / steps
            draw.text((x - 3, y0 + 4), str(tick), fill="black")
        for value in (0.0, 0.5, 1.0):
            y = y0 - (y0 - y1) * value
            draw.line((x0, y, x1, y), fill=(225, 225, 225))
            draw.text((left + 6, y - 6), f"{value:.1f}", fill="black")
        for label, values in plans.items():
            points = [(x0 + (x1 - x0) * k / steps, y0 - (y0 - y1) * v) for k, v in enumerate(values)]
            draw.line(points, fill=COLOURS[label], width=2)
            for x, y in points:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=COLOURS[label])
    for row, label in enumerate(PLANS):
        y = panel + 6 + 20 * row
        draw.line((margin, y + 6, margin + 30, y + 6), fill=COLOURS[label], width=3)
        draw.text((margin + 38, y), f"{label}: completeness after k trajectories", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
