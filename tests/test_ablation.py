"""`make ablation`'s plan: the grid it promises, every stage after what it needs, one folder per run."""

from pathlib import Path

import pandas as pd
import pytest

from gcdr.config import load_config, section
from gcdr_tools.ablation import AblationConfig, claims_markdown, plan_ablation, plot_ablation, summary_markdown


def plan(*overrides):
    cfg = load_config("configs/synthgaze.yaml", ["out_root=/tmp/gcdr-plan", *overrides])
    ablation = section(cfg, "ablation", AblationConfig)
    return plan_ablation(cfg, ablation), ablation


def test_the_grid_seeds_ratios_sources_and_the_T_sweep_at_one_ratio():
    result, ablation = plan("ablation.sweep_students=true", "ablation.extra_sources=[direct mapping, self-training]")
    seeds, ratios = ablation.seeds, ablation.ratios
    per_ratio = 3 + 1  # labeled only, raw, argmax + GCDR at main_T
    sweep_extra = len(ablation.ts) - 1 + len(ablation.extra_sources)  # other Ts, direct mapping, self-training
    expected = len(seeds) * (len(ratios) * per_ratio + sweep_extra + 1)  # + full supervision per seed
    assert len(result.runs) == expected * len(ablation.students)
    assert len({run.out_dir for run in result.runs}) == len(result.runs)  # never two runs in one folder
    sweep = {run.source for run in result.runs if run.ratio == ablation.sweep_ratio}
    assert {f"+ GCDR T={T}" for T in ablation.ts} | {"+ direct mapping", "+ self-training"} <= sweep
    other = {run.source for run in result.runs if run.ratio not in (None, ablation.sweep_ratio)}
    assert {s for s in other if "GCDR" in s} == {f"+ GCDR T={ablation.main_T}"}


def test_the_default_grid_trains_students_on_main_T_and_self_training_only_at_the_sweep_ratio():
    """The default keeps `make ablation` within 2 hours on 2 cores: no students on the other Ts, no direct mapping
    (its 3 teachers); one more command adds them and reuses every finished run."""
    result, ablation = plan()
    assert not ablation.sweep_students and ablation.extra_sources == ["self-training"]
    assert len(result.runs) == len(ablation.seeds) * (len(ablation.ratios) * 4 + 1 + 1) * len(ablation.students)
    teachers = [stage for stage in result.stages if stage.module == "train_teacher"]
    assert len(teachers) == len(ablation.seeds) * len(ablation.ratios)
    wider, _ = plan("ablation.sweep_students=true", "ablation.extra_sources=[direct_mapping,self-training]")
    assert "+ direct mapping" in {run.source for run in wider.runs}  # "_" for the space: what Make's SET can pass
    assert {run.out_dir for run in result.runs} < {run.out_dir for run in wider.runs}  # the same folders, reused


def test_without_sweep_students_every_T_is_refined_and_scored_but_students_read_only_main_T():
    result, ablation = plan("ablation.sweep_students=false", "ablation.extra_sources=[]")
    sweep = {run.source for run in result.runs if run.ratio == ablation.sweep_ratio}
    assert {s for s in sweep if "GCDR" in s} == {f"+ GCDR T={ablation.main_T}"}
    refined = {T for (source, _, ratio) in result.pseudo_folders for T in ablation.ts
               if ratio == ablation.sweep_ratio and source == f"GCDR T={T}"}
    assert refined == set(ablation.ts)
    names = {stage.name for stage in result.stages}
    assert all(f"refine seed0 r{ablation.sweep_ratio} T={T}" in names for T in ablation.ts)


def test_a_sweep_T_from_pure_noise_is_named_the_teacher_alone_in_the_report():
    from gcdr_tools.ablation import teacher_alone_note

    cfg = load_config("configs/synthgaze.yaml", ["out_root=/tmp/gcdr-plan", "ablation.ts=[250,400,500]"])
    assert "GCDR T=500 starts from pure noise" in teacher_alone_note(cfg, section(cfg, "ablation", AblationConfig))
    cfg = load_config("configs/synthgaze.yaml", ["out_root=/tmp/gcdr-plan", "ablation.ts=[250,400]"])
    assert teacher_alone_note(cfg, section(cfg, "ablation", AblationConfig)) == ""


@pytest.mark.parametrize("overrides", [[], ["ablation.sweep_students=true",
                                             "ablation.extra_sources=[direct mapping, self-training]"]],
                         ids=["default", "every source"])
def test_every_stage_comes_after_what_it_waits_for_and_students_wait_for_their_pseudo_labels(overrides):
    result, _ = plan(*overrides)
    position = {stage.name: i for i, stage in enumerate(result.stages)}
    assert len(position) == len(result.stages)
    for stage in result.stages:
        assert all(position[a] < position[stage.name] for a in stage.after), stage.name
    for stage in result.stages:
        if stage.module == "train_student" and "GCDR" in stage.name:
            assert any(a.startswith("refine") for a in stage.after)
        if stage.module == "refine" and "T=" in stage.name:
            assert any(a.startswith("teacher") for a in stage.after)  # the teacher of the same seed and ratio
        if stage.module == "refine" and stage.name.endswith("direct"):
            assert any(a.startswith("teacher") and a.endswith("direct") for a in stage.after)
        if stage.module == "refine" and "self-training" in stage.name:  # the labeled-only student teaches
            assert any(a.endswith("labeled only") for a in stage.after)
    if overrides:
        direct_teacher = next(s for s in result.stages if s.name == "teacher seed0 r0.1 direct")
        assert "teacher.objective=direct" in direct_teacher.overrides and "gradcam train" in direct_teacher.after


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="ratios"):
        AblationConfig(ratios=[1.0])
    with pytest.raises(ValueError, match="main_T"):
        AblationConfig(ts=[100], main_T=250)


def test_summary_reports_mean_and_sd_over_seeds():
    ablation = AblationConfig(seeds=[0, 1], ratios=[0.1], students=["gazelle"])
    students = pd.DataFrame([
        {"student": "gazelle", "seed": 0, "ratio": 0.1, "source": "labeled only", "auc": 0.8, "avg_l2": 0.2},
        {"student": "gazelle", "seed": 1, "ratio": 0.1, "source": "labeled only", "auc": 0.9, "avg_l2": 0.4},
    ])
    text = summary_markdown(students, pd.DataFrame(), ablation)
    assert "| labeled only | 0.300 +- 0.141 (n=2) |" in text
    assert "| labeled only | 0.850 +- 0.071 (n=2) |" in text


def test_the_figure_leaves_room_above_the_highest_error_bar(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    ablation = AblationConfig(seeds=[0, 1], ratios=[0.1], students=["gazelle"], ts=[400], main_T=400,
                              extra_sources=[])
    rows = [("labeled only", 0.30, 0.31), ("+ GCDR T=400", 0.33, 0.47)]  # the second: a wide error bar
    students = pd.DataFrame([{"student": "gazelle", "seed": seed, "ratio": 0.1, "source": source, "auc": 0.8,
                              "avg_l2": l2} for source, *l2s in rows for seed, l2 in enumerate(l2s)])
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_ablation(tmp_path / "results.png", students, ablation)
    assert (tmp_path / "results.png").is_file()
    l2_axis = figures[0].axes[0]
    highest = 0.40 + pd.Series([0.33, 0.47]).std()  # mean + sd of the GCDR bar
    assert l2_axis.get_ylim()[1] > highest * 1.1


def test_a_second_arm_shares_teachers_and_skips_the_runs_without_pseudo_labels():
    result, _ = plan("ablation.baselines=false", "ablation.teacher_root=/elsewhere/ablation")
    assert {run.source for run in result.runs}.isdisjoint({"labeled only", "full supervision"})
    teachers = [s for s in result.stages if s.module == "train_teacher" and not s.name.endswith("direct")]  # the
    # direct-mapping teacher learns from this arm's own Grad-CAM maps: never shared
    assert teachers and all(s.extra[-1].startswith("/elsewhere/ablation/seed") for s in teachers)
    refines = [s for s in result.stages if s.module == "refine" and "T=" in s.name]
    assert all(any(o.startswith("refine.teacher=/elsewhere/ablation/") for o in s.overrides) for s in refines)


def test_a_second_arm_reads_the_shared_baselines_from_their_folder_and_runs_none_of_them():
    result, _ = plan("ablation.baselines=false", "ablation.baselines_root=/elsewhere/ablation")
    shared = {(run.source, run.seed, run.ratio): run.out_dir for run in result.runs
              if run.source in ("labeled only", "full supervision")}
    assert shared[("labeled only", 0, 0.1)] == Path("/elsewhere/ablation/seed0/r0.1/students/gazelle-labeled-only")
    assert shared[("full supervision", 2, None)] == Path(
        "/elsewhere/ablation/seed2/full/students/gazelle-full-supervision")
    assert not [s for s in result.stages if s.module == "train_student" and
                ("labeled only" in s.name or "full supervision" in s.name)]


def test_the_vat_gc_teacher_is_an_opt_in_source_with_its_own_chain():
    result, _ = plan("ablation.extra_sources=[VAT-GC teacher]", "ablation.seeds=[0]", "ablation.ratios=[0.1]")
    names = [s.name for s in result.stages]
    assert names.count("gradcam test") == 1
    teacher = next(s for s in result.stages if s.name == "student vat-gc seed0 r0.1 teacher")
    assert "student.model=vat-gc" in teacher.overrides and "gradcam test" in teacher.after
    assert any(o.startswith("student.gradcam_folders=[") for o in teacher.overrides)
    refine = next(s for s in result.stages if s.name == "refine seed0 r0.1 vat-gc")
    assert teacher.name in refine.after and "refine.method=student" in refine.overrides
    assert any(run.source == "+ VAT-GC teacher" for run in result.runs)
    assert "gradcam test" not in [s.name for s in plan()[0].stages]  # not in the default plan


def test_the_claims_table_checks_the_precondition_and_the_share_of_the_gap_gcdr_recovers():
    ablation = AblationConfig(seeds=[0, 1], ratios=[0.1], students=["vat"])
    rows = []
    for seed, noise in ((0, 0.0), (1, 0.01)):
        for source, l2 in (("labeled only", 0.30), ("full supervision", 0.20), ("+ GCDR T=250", 0.25),
                           ("+ Grad-CAM (raw)", 0.28), ("+ argmax", 0.24)):
            rows.append({"student": "vat", "seed": seed, "ratio": 1.0 if source == "full supervision" else 0.1,
                         "source": source, "avg_l2": l2 + noise, "auc": 0.8})
    quality = pd.DataFrame([{"source": "Grad-CAM (raw)", "seed": 0, "ratio": 0.1, "avg_l2": 0.38, "auc": 0.6},
                            {"source": "GCDR T=250", "seed": 0, "ratio": 0.1, "avg_l2": 0.37, "auc": 0.6}])
    text = claims_markdown(pd.DataFrame(rows), quality, ablation)
    # gap 0.100 with sd 0.00707 in both arms: 14.1 sds, the precondition holds; GCDR closes half the gap,
    # beats raw Grad-CAM but not argmax
    assert "| vat | avg_l2 | 0.1 | +0.100 (14.1) | yes | 50% | yes / no |" in text
    # no gap in AUC: nothing to recover, and the precondition fails
    assert "| vat | auc | 0.1 | +0.000 | no | - |" in text
    assert "raw Grad-CAM (avg L2): 0.1: yes (0.370 vs 0.380)" in text


def test_the_draws_source_refines_once_with_kept_draws_and_trains_one_student_per_way_of_reading_them():
    result, _ = plan("ablation.extra_sources=[GCDR draws]", "ablation.seeds=[0]", "ablation.ratios=[0.1]",
                     "ablation.draws=3", "ablation.main_T=250")
    refine = next(s for s in result.stages if s.name == "refine seed0 r0.1 T=250 draws")
    assert {"refine.samples=3", "refine.keep_draws=true", "refine.T=250"} <= set(refine.overrides)
    runs = [r for r in result.runs if "draws" in r.source]
    assert [r.source for r in runs] == [f"+ GCDR T=250, 3 draws, {how}" for how in
                                        ("mean", "per pass", "per pass, confidence-weighted",
                                         "mean, most confident half")]
    assert {str(r.pseudo) for r in runs} == {refine.extra[-1]}
    weighted = next(s for s in result.stages if s.name.endswith("per pass, confidence-weighted"))
    assert {"student.pseudo_draws=per_pass", "student.pseudo_confidence=weight"} <= set(weighted.overrides)
    assert all("," not in r.out_dir.name for r in runs)
    with pytest.raises(ValueError, match="draws"):
        AblationConfig(extra_sources=["GCDR draws"], draws=1)
