"""`make ablation`: the label-saving claim, measured with seeds and error bars.

The protocol, fixed before any run (the README reports whatever it gives):
- one dataset draw and one stand-in VQA model (pretrained once, on an independent draw, never on a gaze point);
  Grad-CAM once for every train person; raw-Grad-CAM and argmax pseudo-labels once for every train person
  (a student reads only its unlabeled persons' maps);
- for each seed s and label ratio r: the split (seed s), the diffusion teacher (seed s, trained on the labeled
  persons only), GCDR refinement of the unlabeled persons at T = 250 (and the T sweep at ``sweep_ratio``);
- students (seed s, a fixed budget, the last model reported; no checkpoint or setting is chosen on the test
  split) trained on: the labeled persons only; + raw Grad-CAM; + argmax; + GCDR at each T; and, per seed, on
  every train person labeled (full supervision);
- at ``sweep_ratio``, the other baselines of the paper (``extra_sources``): + direct mapping (the teacher's
  network trained to map Grad-CAM to the heatmap in one step, no diffusion) and + self-training (the
  labeled-only student's own predictions of the unlabeled persons); opt-in: + VAT-GC teacher (GCDR's
  ``baseline_gradcam``: a VAT with the Grad-CAM map as an input, trained on the labeled persons, predicts the
  unlabeled ones);
- pseudo-label quality: each pseudo-label folder against the ground truth of its unlabeled persons.
Every run has its own folder under ``<out_root>/ablation/``; every stage resumes, so a second call reuses all
finished work and a killed call continues.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcdr import paths
from gcdr.atomic import write_text_atomic
from gcdr.config import load_config, section
from gcdr.provenance import write_provenance

log = logging.getLogger(__name__)
SOURCES_FIXED = ("labeled only", "+ Grad-CAM (raw)", "+ argmax")
EXTRA_SOURCES = ("direct mapping", "self-training", "VAT-GC teacher", "GCDR draws")
# the same names with "_" for their spaces: Make's SET splits its value at spaces (SET="ablation.extra_sources=
# [direct_mapping,self-training]")
SOURCE_SPELLINGS = {name.replace(" ", "_"): name for name in EXTRA_SOURCES}
# "GCDR draws": GCDR at main_T refined with ``draws`` noise draws kept per person (refine.keep_draws), read four
# ways by students (row name -> student overrides; docs/method.md#k-draws-and-confidence)
DRAW_ROWS = {
    "mean": [],
    "per pass": ["student.pseudo_draws=per_pass"],
    "per pass, confidence-weighted": ["student.pseudo_draws=per_pass", "student.pseudo_confidence=weight"],
    "mean, most confident half": ["student.pseudo_confidence=filter", "student.pseudo_keep=0.5"],
}


def draw_row(ablation: AblationConfig, how: str) -> str:
    return f"+ GCDR T={ablation.main_T}, {ablation.draws} draws, {how}"


def extra_rows(ablation: AblationConfig) -> list[str]:
    """The table rows of ``ablation.extra_sources``, in order."""
    rows = []
    for source in ablation.extra_sources:
        if source == "GCDR draws":
            rows += [draw_row(ablation, how) for how in DRAW_ROWS]
        else:
            rows.append(f"+ {source}")
    return rows


@dataclass
class AblationConfig:
    """The ``ablation:`` config section.

    seeds, ratios: the grid; sweep_ratio: the ratio at which every T of ``ts`` is refined (others: ``main_T``)
    and the ``extra_sources`` run (direct mapping, self-training); sweep_students: students also on the other
    Ts' pseudo-labels (false: those are refined and scored, students read only ``main_T``'s; the demo's budget);
    students: student models trained on every source; student_overrides: per student model, ``key=value``
    overrides of the ``student:`` section (budget, backbone) used for every run of that model.
    baselines: also train the students that read no pseudo-label (labeled only, full supervision); false for a
    second arm that only swaps the pseudo-labels' source (e.g. another VQA model) and shares those runs.
    teacher_root: take the diffusion teachers from another ablation folder (<root>/seed<S>/r<R>/teacher, the
    same split and teacher settings: the stage then finds them finished) instead of training them again.
    baselines_root: with ``baselines: false``, the ablation folder whose labeled-only and full-supervision runs
    this arm shares: their finished metrics are read into the tables and the claims (nothing is run there).
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    ratios: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    ts: list[int] = field(default_factory=lambda: [100, 250, 400])
    main_T: int = 250
    sweep_ratio: float = 0.1
    sweep_students: bool = True
    students: list[str] = field(default_factory=lambda: ["gazelle"])
    student_overrides: dict[str, list[str]] = field(default_factory=dict)
    baselines: bool = True
    teacher_root: str | None = None
    baselines_root: str | None = None
    extra_sources: list[str] = field(default_factory=lambda: ["direct mapping", "self-training"])
    draws: int = 4

    def __post_init__(self) -> None:
        self.extra_sources = [SOURCE_SPELLINGS.get(source, source) for source in self.extra_sources]
        unknown = sorted(set(self.extra_sources) - set(EXTRA_SOURCES))
        if unknown:
            raise ValueError(f"ablation.extra_sources: unknown {unknown}; known: {list(EXTRA_SOURCES)}")
        if "GCDR draws" in self.extra_sources and self.draws < 2:
            raise ValueError(f"ablation.draws must be at least 2 for the GCDR draws source, got {self.draws}")
        if not self.seeds or not self.ratios or not self.students:
            raise ValueError("ablation.seeds, ablation.ratios and ablation.students must not be empty")
        bad = [r for r in self.ratios if not 0 < float(r) < 1]
        if bad:
            raise ValueError(f"ablation.ratios must be in (0, 1) (full supervision is always run), got {bad}")
        if self.main_T not in self.ts:
            raise ValueError(f"ablation.main_T={self.main_T} must be one of ablation.ts={self.ts}")


@dataclass
class Run:
    """One student run of the ablation: its place in the grid and its folder."""

    student: str
    seed: int
    ratio: float | None  # None = full supervision
    source: str
    pseudo: Path | None
    out_dir: Path


@dataclass
class Plan:
    """What `make ablation` runs: stages for gcdr_tools.stages.run_stages, the student runs and the pseudo-label
    folders to score (label -> (seed, ratio, folder))."""

    stages: list
    runs: list[Run]
    pseudo_folders: dict[tuple[str, int, float], Path]


def ratio_dir(root: Path, seed: int, ratio: float) -> Path:
    return root / f"seed{seed}" / f"r{paths.ratio_text(ratio)}"


def plan_ablation(cfg: dict[str, Any], ablation: AblationConfig) -> Plan:
    """The stages (in critical-path order) and runs of the ablation for ``cfg``."""
    from gcdr_tools.stages import Stage

    root = paths.out_root(cfg) / "ablation"
    gradcam = paths.gradcam_dir(cfg, "train")
    raw, argmax = root / "pseudo" / "raw-gradcam-train", root / "pseudo" / "argmax-train"
    stages = [
        Stage("data-synth", "data_synth"),
        Stage("synth-vqa", "synth_vqa", ("data-synth",)),
        Stage("gradcam train", "gradcam", ("synth-vqa",), ["gradcam.split=train"]),
        Stage("refine raw", "refine", ("gradcam train",), ["refine.method=none", "refine.split=train"],
              ["--src", str(gradcam), "--out", str(raw)]),
        Stage("refine argmax", "refine", ("gradcam train",), ["refine.method=argmax", "refine.split=train"],
              ["--src", str(gradcam), "--out", str(argmax)]),
    ]
    runs: list[Run] = []
    folders: dict[tuple[str, int, float], Path] = {}

    def teacher_of(seed: int, ratio: float) -> Path:
        return (ratio_dir(Path(ablation.teacher_root), seed, ratio) if ablation.teacher_root
                else ratio_dir(root, seed, ratio)) / "teacher"

    def student_stages(seed: int, ratio: float | None, source: str, pseudo: Path | None, after: tuple[str, ...],
                       split_overrides: list[str], folder: Path, models: list[str] | None = None) -> None:
        shared = pseudo is None and not ablation.baselines
        if shared and not ablation.baselines_root:
            return
        for model in models or ablation.students:
            name = model + "-" + re.sub(r"[ ,()]+", "-", source.replace("+ ", "")).strip("-")
            if shared:  # another arm's run: read, never run
                runs.append(Run(model, seed, ratio, source, None,
                                Path(ablation.baselines_root) / folder.relative_to(root) / "students" / name))
                continue
            out_dir = folder / "students" / name
            runs.append(Run(model, seed, ratio, source, pseudo, out_dir))
            # the Gaze-LLE student's frozen encoder is the stand-in VQA's vision tower
            stages.append(Stage(f"student {model} seed{seed} r{ratio or 1.0} {source}", "train_student",
                                tuple(dict.fromkeys(("synth-vqa", *after))),
                                [*split_overrides, f"student.model={model}", f"student.seed={seed}",
                                 *ablation.student_overrides.get(model, [])],
                                ["--pseudo", str(pseudo or "none"), "--out", str(out_dir)]))

    def extra_stages(seed: int, ratio: float, tag: str, split: list[str], folder: Path, gradcam: Path) -> None:
        if "direct mapping" in ablation.extra_sources:
            direct_teacher, direct = folder / "direct-teacher", folder / "pseudo" / "direct"
            folders[("direct mapping", seed, ratio)] = direct
            stages.append(Stage(f"teacher {tag} direct", "train_teacher", (f"split {tag}", "gradcam train"),
                                [*split, f"teacher.seed={seed}", "teacher.objective=direct",
                                 f"teacher.prior={gradcam}", "teacher.val_split=none"],
                                ["--out", str(direct_teacher)]))
            stages.append(Stage(f"refine {tag} direct", "refine", ("gradcam train", f"teacher {tag} direct"),
                                [*split, "refine.method=direct", "refine.split=unlabeled",
                                 f"refine.teacher={direct_teacher / 'model'}"],
                                ["--src", str(gradcam), "--out", str(direct)]))
            student_stages(seed, ratio, "+ direct mapping", direct, (f"split {tag}", f"refine {tag} direct"), split,
                           folder)
        if "self-training" in ablation.extra_sources and ablation.baselines:
            for model in ablation.students:  # each student model teaches itself
                labeled_only = next(r for r in runs if (r.student, r.seed, r.ratio, r.source)
                                    == (model, seed, ratio, "labeled only"))
                pseudo = folder / "pseudo" / f"self-training-{model}"
                folders[(f"self-training ({model})", seed, ratio)] = pseudo
                stages.append(Stage(f"refine {tag} self-training {model}", "refine",
                                    ("gradcam train", f"student {model} seed{seed} r{ratio} labeled only"),
                                    [*split, "refine.method=student", "refine.split=unlabeled",
                                     f"refine.student={labeled_only.out_dir / 'model'}",
                                     f"student.model={model}", *ablation.student_overrides.get(model, [])],
                                    ["--src", str(gradcam), "--out", str(pseudo)]))
                student_stages(seed, ratio, "+ self-training", pseudo,
                               (f"split {tag}", f"refine {tag} self-training {model}"), split, folder, [model])
        if "GCDR draws" in ablation.extra_sources:
            T, pseudo = ablation.main_T, folder / "pseudo" / f"gcdr-T{ablation.main_T}-draws{ablation.draws}"
            folders[(f"GCDR T={T}, mean of {ablation.draws} draws", seed, ratio)] = pseudo
            stages.append(Stage(f"refine {tag} T={T} draws", "refine", ("gradcam train", f"teacher {tag}"),
                                [*split, "refine.method=gcdr", f"refine.T={T}", "refine.split=unlabeled",
                                 f"refine.seed={seed}", f"refine.samples={ablation.draws}", "refine.keep_draws=true",
                                 f"refine.teacher={teacher_of(seed, ratio) / 'model'}"],
                                ["--src", str(gradcam), "--out", str(pseudo)]))
            for how, overrides in DRAW_ROWS.items():
                student_stages(seed, ratio, draw_row(ablation, how), pseudo, (f"split {tag}", f"refine {tag} T={T} draws"),
                               [*split, *overrides], folder)
        if "VAT-GC teacher" in ablation.extra_sources:  # opt-in: a VAT on CPU costs about 10 Gaze-LLE students
            gradcam_test = paths.gradcam_dir(cfg, "test")
            if not any(s.name == "gradcam test" for s in stages):  # its own evaluation reads the test persons' maps
                stages.append(Stage("gradcam test", "gradcam", ("synth-vqa",), ["gradcam.split=test"]))
            teacher_dir, pseudo = folder / "vat-gc-teacher", folder / "pseudo" / "vat-gc"
            folders[("VAT-GC teacher", seed, ratio)] = pseudo
            stages.append(Stage(f"student vat-gc seed{seed} r{ratio} teacher", "train_student",
                                (f"split {tag}", "gradcam train", "gradcam test"),
                                [*split, "student.model=vat-gc", f"student.seed={seed}",
                                 f"student.gradcam_folders=[{gradcam},{gradcam_test}]",
                                 *ablation.student_overrides.get("vat-gc", [])],
                                ["--pseudo", "none", "--out", str(teacher_dir)]))
            stages.append(Stage(f"refine {tag} vat-gc", "refine",
                                ("gradcam train", f"student vat-gc seed{seed} r{ratio} teacher"),
                                [*split, "refine.method=student", "refine.split=unlabeled",
                                 f"refine.student={teacher_dir / 'model'}"],
                                ["--src", str(gradcam), "--out", str(pseudo)]))
            student_stages(seed, ratio, "+ VAT-GC teacher", pseudo, (f"split {tag}", f"refine {tag} vat-gc"), split,
                           folder)

    for seed in ablation.seeds:
        for ratio in ablation.ratios:
            folder = ratio_dir(root, seed, ratio)
            split = [f"split.ratio={ratio}", f"split.seed={seed}"]
            tag = f"seed{seed} r{ratio}"
            stages.append(Stage(f"split {tag}", "split", ("data-synth",), split))
            teacher = teacher_of(seed, ratio)
            stages.append(Stage(f"teacher {tag}", "train_teacher", (f"split {tag}",),
                                [*split, f"teacher.seed={seed}"], ["--out", str(teacher)]))
            folders[("Grad-CAM (raw)", seed, ratio)] = raw
            folders[("argmax", seed, ratio)] = argmax
            student_stages(seed, ratio, "labeled only", None, (f"split {tag}",), split, folder)
            student_stages(seed, ratio, "+ Grad-CAM (raw)", raw, (f"split {tag}", "refine raw"), split, folder)
            student_stages(seed, ratio, "+ argmax", argmax, (f"split {tag}", "refine argmax"), split, folder)
            for T in (ablation.ts if ratio == ablation.sweep_ratio else [ablation.main_T]):
                refined = folder / "pseudo" / f"gcdr-T{T}"
                folders[(f"GCDR T={T}", seed, ratio)] = refined
                stages.append(Stage(f"refine {tag} T={T}", "refine", ("gradcam train", f"teacher {tag}"),
                                    [*split, "refine.method=gcdr", f"refine.T={T}", "refine.split=unlabeled",
                                     f"refine.seed={seed}", f"refine.teacher={teacher / 'model'}"],
                                    ["--src", str(gradcam), "--out", str(refined)]))
                if T == ablation.main_T or ablation.sweep_students:
                    student_stages(seed, ratio, f"+ GCDR T={T}", refined, (f"split {tag}", f"refine {tag} T={T}"),
                                   split, folder)
            if ratio == ablation.sweep_ratio:
                extra_stages(seed, ratio, tag, split, folder, gradcam)
        student_stages(seed, None, "full supervision", None, ("data-synth",), ["split.ratio=1.0",
                                                                              f"split.seed={seed}"],
                       root / f"seed{seed}" / "full")
    return Plan(_critical_path_first(stages, _priority(ablation)), runs, folders)


def _priority(ablation: AblationConfig):
    """Among stages of one kind, the most telling first, so that a run cut short has every seed of the main
    comparisons: the sweep ratio first, then the others; labeled only, GCDR at main_T, raw, argmax and full
    supervision before the other Ts; seeds innermost."""
    ratios = [ablation.sweep_ratio] + sorted(r for r in ablation.ratios if r != ablation.sweep_ratio)
    sources = ["labeled only", f"+ GCDR T={ablation.main_T}", "+ Grad-CAM (raw)", "+ argmax", "full supervision"]

    def key(stage) -> tuple:
        name = stage.name
        if stage.module == "refine" and "T=" not in name:  # raw / argmax of every train person: shared, cheap
            return (False, -1, 0, False, 0)
        ratio = next((r for r in ratios if f" r{r} " in name + " " or f" r{r}]" in name), None)
        source = next((i for i, s in enumerate(sources) if name.endswith(s)), len(sources))
        if stage.module == "refine" and name.endswith(f"T={ablation.main_T}"):
            source = 1  # just before the students that read it
        if "full supervision" in name:
            ratio = ablation.sweep_ratio
        other_t = f"T={ablation.main_T}" not in name and "T=" in name
        seed = int(name.split("seed")[1].split()[0]) if "seed" in name else 0
        return (other_t, ratios.index(ratio) if ratio in ratios else len(ratios), source,
                stage.module == "train_student", seed)

    return key


def _critical_path_first(stages: list, priority=None) -> list:
    """Order stages so that the long chains (VQA -> Grad-CAM -> refine) start early and, within a kind, by
    ``priority``; dependencies keep their order (every stage still comes after the stages it waits for)."""
    rank = {"data_synth": 0, "synth_vqa": 1, "split": 2, "train_teacher": 3, "gradcam": 4, "refine": 5,
            "train_student": 5}  # refinements and students interleave by priority
    ordered, placed = [], set()
    pending = sorted(stages, key=lambda s: (rank.get(s.module, 9), priority(s) if priority else ()))
    while pending:
        for stage in pending:
            if set(stage.after) <= placed:
                ordered.append(stage)
                placed.add(stage.name)
                pending.remove(stage)
                break
        else:  # pragma: no cover - a cycle is a programming error
            raise ValueError(f"ablation stages wait for each other: {[s.name for s in pending]}")
    return ordered


# ------------------------------------------------------------------------------------------------ report

def _mean_sd(values: list[float]) -> str:
    import numpy as np

    values = [v for v in values if v == v]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} +- {np.std(values, ddof=1):.3f}"


def student_table(plan: Plan):
    """One row per finished student run: student, seed, ratio, source and its final test metrics."""
    import pandas as pd

    from gcdr_tools.report import read_student_metrics

    rows = []
    for run in plan.runs:
        if (run.out_dir / "metrics.json").is_file():
            rows.append({"student": run.student, "seed": run.seed,
                         "ratio": run.ratio if run.ratio is not None else 1.0, "source": run.source,
                         **read_student_metrics(run.out_dir)})
    return pd.DataFrame(rows)


def quality_table(cfg: dict[str, Any], plan: Plan):
    """Pseudo-label quality per (source, seed, ratio) on that split's unlabeled in-frame persons."""
    import pandas as pd

    from gcdr.data import load_samples
    from gcdr.pseudolabels import check_final
    from gcdr_tools.report import pseudo_label_quality

    rows = []
    for (source, seed, ratio), folder in plan.pseudo_folders.items():
        if not (folder / "manifest.csv").is_file():
            continue
        split_cfg = dict(cfg, split=dict(cfg["split"], ratio=ratio, seed=seed))
        try:  # only finished folders are scored (a run cut short is reported as not run)
            check_final(folder, [s.sample_id for s in load_samples(split_cfg, "unlabeled")])
        except ValueError as error:
            log.warning("not scored: %s", error)
            continue
        quality = pseudo_label_quality(split_cfg, {source: folder}, reference=None).iloc[0]
        rows.append({"source": source, "seed": seed, "ratio": ratio, "auc": quality["auc"],
                     "avg_l2": quality["avg_l2"], "persons": quality["persons"]})
    return pd.DataFrame(rows)


def summary_markdown(students, quality, ablation: AblationConfig) -> str:
    """Tables of mean +- sd over seeds: students (avg L2 and AUC per ratio) and pseudo-label quality."""
    lines = []
    order = (list(SOURCES_FIXED) + [f"+ GCDR T={T}" for T in ablation.ts]
             + extra_rows(ablation) + ["full supervision"])
    ratios = sorted(float(r) for r in ablation.ratios)
    for student in ablation.students:
        table = students[students["student"] == student] if len(students) else students
        for metric, better in (("avg_l2", "lower is better"), ("auc", "higher is better")):
            lines += [f"### {student}: {metric} on the test split ({better}; mean +- sd over seeds, n = seeds run)",
                      "", "| trained on | " + " | ".join(f"{r:g} labels" for r in ratios) + " |",
                      "|---|" + "---|" * len(ratios)]
            for source in order:
                cells = []
                for ratio in ratios:
                    ratio_key = 1.0 if source == "full supervision" else ratio
                    chosen = table[(table["source"] == source) & (table["ratio"] == ratio_key)] if len(table) else []
                    values = list(chosen[metric]) if len(chosen) else []
                    cells.append(_mean_sd(values) + (f" (n={len(values)})" if values else ""))
                if any(c != "-" for c in cells):
                    lines.append(f"| {source} | " + " | ".join(cells) + " |")
            lines.append("")
    if len(quality):
        lines += ["### Pseudo-label quality on the unlabeled persons (avg L2 / AUC against the truth; mean +- sd)",
                  "", "| pseudo-labels | " + " | ".join(f"{r:g} labels" for r in ratios) + " |",
                  "|---|" + "---|" * len(ratios)]
        extra = sorted({s for s in quality["source"]
                        if s in ("direct mapping", "VAT-GC teacher") or s.startswith("self-training")
                        or "draws" in s})
        for source in ["Grad-CAM (raw)", "argmax"] + [f"GCDR T={T}" for T in ablation.ts] + extra:
            cells = []
            for ratio in ratios:
                chosen = quality[(quality["source"] == source) & (quality["ratio"] == ratio)]
                cells.append(f"{_mean_sd(list(chosen['avg_l2']))} / {_mean_sd(list(chosen['auc']))}"
                             if len(chosen) else "-")
            if any(c != "-" for c in cells):
                lines.append(f"| {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def claims_markdown(students, quality, ablation: AblationConfig) -> str:
    """The issue's claims, checked on the numbers (per student, metric and ratio; mean over seeds):
    precondition: full supervision beats labeled only by more than 3 seed sds (the larger of the two);
    recovered: (GCDR at main_T - labeled only) / (full - labeled only), the share of the gap GCDR closes;
    GCDR vs raw Grad-CAM and argmax students; and GCDR's pseudo-labels against raw Grad-CAM's (avg L2)."""
    import numpy as np

    if not len(students):
        return ""
    gcdr = f"+ GCDR T={ablation.main_T}"

    def values(table, source, ratio, metric):
        ratio_key = 1.0 if source == "full supervision" else ratio
        return list(table[(table["source"] == source) & (table["ratio"] == ratio_key)][metric].dropna())

    def sd(v):
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")

    lines = [f"### The claims, checked (GCDR = {gcdr[2:]}; mean over seeds; gap = full supervision - labeled only)",
             "", "| student | metric | labels | gap (in sds) | precondition: gap > 3 sd | GCDR recovers | "
             "GCDR beats raw / argmax |", "|---|---|---|---|---|---|---|"]
    for student in ablation.students:
        table = students[students["student"] == student]
        for metric, sign in (("avg_l2", -1.0), ("auc", 1.0)):
            for ratio in sorted(float(r) for r in ablation.ratios):
                lab, full, ours = (values(table, s, ratio, metric) for s in ("labeled only", "full supervision", gcdr))
                if not lab or not full:
                    continue
                gap = sign * (np.mean(full) - np.mean(lab))
                spread = max(sd(lab), sd(full))
                holds = "yes" if spread == spread and gap > 3 * spread else ("no" if spread == spread else "n < 2")
                recovered = (f"{sign * (np.mean(ours) - np.mean(lab)) / gap:.0%}" if ours and gap > 0 else "-")
                beats = []
                for other in ("+ Grad-CAM (raw)", "+ argmax"):
                    theirs = values(table, other, ratio, metric)
                    beats.append("-" if not ours or not theirs else
                                 "yes" if sign * (np.mean(ours) - np.mean(theirs)) > 0 else "no")
                in_sds = f" ({gap / spread:.1f})" if spread == spread and spread > 0 else ""
                lines.append(f"| {student} | {metric} | {ratio:g} | {gap:+.3f}{in_sds} | {holds} | {recovered} | "
                             f"{' / '.join(beats)} |")
    if len(quality):
        cells = []
        for ratio in sorted(float(r) for r in ablation.ratios):
            raw = quality[(quality["source"] == "Grad-CAM (raw)") & (quality["ratio"] == ratio)]["avg_l2"]
            ours = quality[(quality["source"] == f"GCDR T={ablation.main_T}") & (quality["ratio"] == ratio)]["avg_l2"]
            if len(raw) and len(ours):
                cells.append(f"{ratio:g}: {'yes' if ours.mean() < raw.mean() else 'no'} "
                             f"({ours.mean():.3f} vs {raw.mean():.3f})")
        if cells:
            lines += ["", "GCDR's pseudo-labels closer to the truth than raw Grad-CAM (avg L2): " + "; ".join(cells)]
    return "\n".join(lines) + "\n"


def plot_ablation(path: Path, students, ablation: AblationConfig) -> None:
    """Per student and metric one axis: bars per source, grouped by ratio, mean over seeds with sd error bars
    and the mean written on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from gcdr.atomic import atomic_path

    sources = (list(SOURCES_FIXED) + [f"+ GCDR T={ablation.main_T}"]
               + extra_rows(ablation) + ["full supervision"])
    ratios = sorted(float(r) for r in ablation.ratios)
    metrics = (("avg_l2", "avg L2 (lower is better)"), ("auc", "AUC (higher is better)"))
    fig, axes = plt.subplots(len(ablation.students), 2, figsize=(14, 4.5 * len(ablation.students)), squeeze=False)
    width = 0.8 / len(sources)
    for row, student in enumerate(ablation.students):
        table = students[students["student"] == student] if len(students) else students
        for col, (metric, label) in enumerate(metrics):
            ax = axes[row][col]
            top = 0.0  # the highest error bar, so that no bar's value is cut off by the axis
            for k, source in enumerate(sources):
                means, sds = [], []
                for ratio in ratios:
                    ratio_key = 1.0 if source == "full supervision" else ratio
                    values = list(table[(table["source"] == source) & (table["ratio"] == ratio_key)][metric]) \
                        if len(table) else []
                    means.append(np.mean(values) if values else np.nan)
                    sds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
                x = np.arange(len(ratios)) + (k - (len(sources) - 1) / 2) * width
                bars = ax.bar(x, means, width, yerr=sds, capsize=2, label=source)
                top = max([top] + [m + s for m, s in zip(means, sds) if m == m])
                for bar, mean, sd in zip(bars, means, sds):
                    if mean == mean:  # the value above its error bar
                        ax.annotate(f"{mean:.3f}", (bar.get_x() + bar.get_width() / 2, mean + sd), fontsize=6,
                                    ha="center", va="bottom", rotation=90, xytext=(0, 2), textcoords="offset points")
            ax.set_xticks(np.arange(len(ratios)), [f"{r:g} labels" for r in ratios])
            ax.set_ylabel(label)
            ax.set_title(f"{student}: {label}, mean +- sd over seeds")
            floor, top = (0.5, max(top, 1.0)) if metric == "auc" else (0.0, top or 1.0)
            ax.set_ylim(floor, top + 0.15 * (top - floor))  # room for the values written above the bars
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(sources), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ the run

def teacher_alone_note(cfg: dict[str, Any], ablation: AblationConfig) -> str:
    """A line for the report when a T of the sweep starts from pure noise (the Grad-CAM prior unused)."""
    from gcdr.teacher.config import TeacherConfig

    steps = section(cfg, "teacher", TeacherConfig).num_train_timesteps
    alone = [T for T in ablation.ts if T >= steps]
    if not alone:
        return ""
    return (f"GCDR T={alone[0]} starts from pure noise ({steps} noise steps): the teacher alone, the Grad-CAM prior "
            "unused; the control for what the VQA's map adds.\n\n")


def run_ablation(config: str, overrides: list[str], report: str = "ablation", jobs: int = 2,
                 report_only: bool = False) -> str:
    """Run (or resume) every stage of the ablation of ``config`` + ``overrides`` and write the report into
    <out_root>/<report>/; returns the markdown tables."""
    cfg = load_config(config, overrides)
    ablation = section(cfg, "ablation", AblationConfig)
    out = paths.out_root(cfg) / report
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / f"{report}.log")])
    plan = plan_ablation(cfg, ablation)
    from gcdr_tools.stages import run_stages, stage_runner

    start = time.perf_counter()
    timings = {} if report_only else run_stages(plan.stages, stage_runner(config, overrides, out / "logs", jobs),
                                                jobs)
    students, quality = student_table(plan), quality_table(cfg, plan)
    students.to_csv(out / "students.csv", index=False)
    quality.to_csv(out / "quality.csv", index=False)
    shared = (f"Labeled only and full supervision: the runs of {ablation.baselines_root}, shared with this arm "
              "(read, not run here).\n\n" if ablation.baselines_root and not ablation.baselines else "")
    shared += teacher_alone_note(cfg, ablation)
    text = (f"# GCDR {report} on {cfg.get('name')}\n\n" + shared + summary_markdown(students, quality, ablation) + "\n"
            + claims_markdown(students, quality, ablation))
    write_text_atomic(out / "results.md", text)
    plot_ablation(out / "results.png", students, ablation)
    write_provenance(out, report, cfg, timings=timings, wall_s=round(time.perf_counter() - start, 1))
    print(text)
    return text
