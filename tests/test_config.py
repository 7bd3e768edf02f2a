"""Recipes: YAML -> typed dataclasses, command-line overrides, unknown keys, `base:` inheritance."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.config import DataSpec, Recipe, load_recipe, parse_override, recipe_from_dict
from pipeline.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "asr" / "conformer_quickstart.yaml"
MINIMAL = {"output_dir": "runs/x", "model": {"family": "wav2vec2", "config": {"hidden_size": 32}}}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, f"error message spans several lines: {msg!r}"
    return msg


def test_quickstart_recipe_loads_into_typed_dataclasses() -> None:
    r = load_recipe(QUICKSTART)
    assert isinstance(r, Recipe)
    assert r.task == "asr" and r.seed == 0
    assert r.data.train == DataSpec(path="data/synth/train")
    assert r.data.eval == DataSpec(path="data/synth/test")
    assert r.data.min_duration == 0.3 and isinstance(r.data.max_duration, float)
    assert r.model.family == "parakeet"
    assert r.model.config["encoder_config"]["hidden_size"] == 144
    assert isinstance(r.train.learning_rate, float) and r.train.learning_rate == pytest.approx(3e-3)
    assert r.train.lr_schedule == "cosine" and r.train.epochs == 9
    assert r.data.augment.speed == [0.85, 1.15] and r.data.augment.vtlp == pytest.approx(0.1)
    assert r.train.resume is False and r.train.max_steps is None
    assert r.eval.max_utterances == 100
    # defaults for keys the recipe does not set
    assert r.data.on_bad_rows == "skip" and r.train.gradient_accumulation == 1


RECIPES = sorted(p for d in ("asr", "ssl", "tts") for p in (QUICKSTART.parents[1] / d).glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_loads_and_validates(path: Path) -> None:
    """A key renamed in the library must not leave a shipped recipe that fails at start-up."""
    recipe = load_recipe(path)
    assert recipe.output_dir and recipe.task in {"asr", "ssl", "vocoder", "acoustic"}


def test_custom_audio_recipe_perturbs_tempo_for_fast_speakers() -> None:
    r = load_recipe(QUICKSTART.parent / "custom_audio.yaml")
    assert r.data.augment.tempo == [1.0, 1.6] and r.data.augment.speed == [0.8, 1.2]


def test_overrides_are_typed() -> None:
    r = load_recipe(QUICKSTART, [
        "train.max_steps=7", "train.learning_rate=3e-4", "train.weight_decay=0", "train.resume=true",
        "train.max_minutes=1.5", "data.max_duration=12", "description=a tiny run", "output_dir=123",
        "seed=5", "train.warmup_steps=null", "train.lr_schedule=constant", "eval.max_utterances=null",
    ])
    assert r.train.max_steps == 7 and type(r.train.max_steps) is int
    # "3e-4" is a string to YAML 1.1; a float field still gets a float
    assert r.train.learning_rate == pytest.approx(3e-4) and type(r.train.learning_rate) is float
    assert r.train.weight_decay == 0.0 and type(r.train.weight_decay) is float
    assert r.train.resume is True
    assert r.train.max_minutes == 1.5
    assert r.data.max_duration == 12.0 and type(r.data.max_duration) is float
    assert r.description == "a tiny run"
    assert r.output_dir == "123" and type(r.output_dir) is str
    assert r.seed == 5
    assert r.train.warmup_steps is None and r.eval.max_utterances is None
    assert r.train.lr_schedule == "constant"


def test_yaml_boolean_words_are_the_choices_they_spell(tmp_path: Path) -> None:
    """YAML 1.1 reads `no` as false: `train.mixed_precision=no` (or `mixed_precision: no` in a file) means "no"."""
    assert load_recipe(QUICKSTART, ["train.mixed_precision=bf16", "train.mixed_precision=no"]).train.mixed_precision == "no"
    path = tmp_path / "r.yaml"
    path.write_text(f"base: {QUICKSTART.resolve()}\ntrain:\n  mixed_precision: no\n", encoding="utf-8")
    assert load_recipe(path).train.mixed_precision == "no"
    with pytest.raises(RecipeError, match="train.lr_schedule: True is not one of"):  # no word of the choices
        load_recipe(QUICKSTART, ["train.lr_schedule=yes"])


def test_parse_override_values() -> None:
    assert parse_override("a.b=1") == (["a", "b"], 1)
    assert parse_override("a=false") == (["a"], False)
    assert parse_override("a=x=y") == (["a"], "x=y")  # only the first '=' splits
    assert parse_override("a=") == (["a"], None)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_override("train.max_steps")
    with pytest.raises(RecipeError, match="empty key"):
        parse_override("train..max_steps=3")


def test_data_spec_string_and_mapping_overrides(tmp_path: Path) -> None:
    r = load_recipe(QUICKSTART, [f"data.train={tmp_path}/train", "data.eval={path: some/dir, split: dev, limit: 5}"])
    assert r.data.train == DataSpec(path=f"{tmp_path}/train")
    assert r.data.eval == DataSpec(path="some/dir", split="dev", limit=5)
    # a string spec followed by one of its keys is promoted to a mapping
    r = load_recipe(QUICKSTART, ["data.train=corpus", "data.train.split=train", "data.train.text_column=sentence"])
    assert r.data.train == DataSpec(path="corpus", split="train", text_column="sentence")
    # the recipe's string spec is promoted too
    r = load_recipe(QUICKSTART, ["data.eval.limit=3"])
    assert r.data.eval == DataSpec(path="data/synth/test", limit=3)


@pytest.mark.parametrize("override, dotted", [
    ("train.max_stepz=3", "train.max_stepz"),
    ("bogus=1", "bogus"),
    ("data.train.colour=red", "data.train.colour"),
    ("eval.foo.bar=1", "eval.foo"),
])
def test_unknown_key_on_the_command_line_is_named(override: str, dotted: str) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(QUICKSTART, [override])
    msg = one_line(exc)
    assert f"'{dotted}'" in msg and "unknown" in msg


def test_unknown_key_in_yaml_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", """\
        output_dir: runs/x
        model: {family: wav2vec2, config: {hidden_size: 32}}
        train:
          epochs: 2
          learning_rat: 0.1
        """)
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    msg = one_line(exc)
    assert "'train.learning_rat'" in msg and "learning_rate" in msg  # the known keys are listed


def test_malformed_yaml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "output_dir: x\ntrain: {epochs: 2\nseed: 1\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    msg = one_line(exc)
    assert str(path) in msg and "malformed YAML" in msg and "line" in msg


def test_recipe_errors_for_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(write(tmp_path / "list.yaml", "- a\n- b\n"))
    with pytest.raises(RecipeError, match="missing recipe key 'output_dir'"):
        load_recipe(write(tmp_path / "no_out.yaml", "model: {family: wav2vec2, config: {}}\n"))
    with pytest.raises(RecipeError, match="model.name_or_path"):
        load_recipe(write(tmp_path / "no_model.yaml", "output_dir: x\n"))


def test_name_or_path_on_the_command_line_drops_the_inline_config() -> None:
    r = load_recipe(QUICKSTART, ["model.name_or_path=some/checkpoint"])
    assert r.model.name_or_path == "some/checkpoint"
    assert r.model.config is None
    # other model settings from the recipe survive
    assert r.model.family == "parakeet" and r.model.mask_time_prob == pytest.approx(0.05)
    # an empty value does not drop it
    assert load_recipe(QUICKSTART, ["model.name_or_path="]).model.config is not None


def test_base_inheritance(tmp_path: Path) -> None:
    write(tmp_path / "bases" / "base.yaml", """\
        output_dir: runs/base
        description: base recipe
        data: {train: data/a, eval: data/b, max_duration: 10}
        model:
          family: parakeet
          config: {encoder_config: {hidden_size: 64, num_hidden_layers: 2}}
          mask_time_prob: 0.05
        train: {epochs: 3, learning_rate: 0.001, batch_seconds: 60}
        """)
    write(tmp_path / "bases" / "mid.yaml", """\
        base: base.yaml
        train: {epochs: 4}
        """)
    child = write(tmp_path / "child.yaml", """\
        base: bases/mid.yaml
        output_dir: runs/child
        data: {max_duration: 5}
        model:
          config: {encoder_config: {hidden_size: 32}}
        train: {learning_rate: 0.01}
        """)
    r = load_recipe(child, ["train.batch_seconds=30"])
    assert r.output_dir == "runs/child" and r.description == "base recipe"
    assert r.data.train == DataSpec(path="data/a") and r.data.max_duration == 5.0  # sections merge key by key
    assert r.train.epochs == 4 and r.train.learning_rate == 0.01 and r.train.batch_seconds == 30.0
    assert r.model.family == "parakeet" and r.model.mask_time_prob == 0.05
    # an inline model config is replaced as a whole, never merged with the base's architecture
    assert r.model.config == {"encoder_config": {"hidden_size": 32}}


def test_base_cycle_and_missing_base(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "base: b.yaml\noutput_dir: x\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(a)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(write(tmp_path / "c.yaml", "base: nowhere.yaml\noutput_dir: x\n"))


@pytest.mark.parametrize("override, match", [
    ("train.max_steps=abc", "train.max_steps: expected an integer"),
    ("train.max_steps=2.5", "train.max_steps: expected an integer"),
    ("train.max_steps=true", "train.max_steps: expected an integer"),
    ("train.resume=1", "train.resume: expected true or false"),
    ("train.resume=maybe", "train.resume: expected true or false"),
    ("train.learning_rate=fast", "train.learning_rate: expected a number"),
    ("train.learning_rate=[1]", "train.learning_rate: expected a number"),
    ("train.lr_schedule=exponential", "train.lr_schedule: 'exponential' is not one of"),
    ("data.on_bad_rows=ignore", "data.on_bad_rows"),
    ("data.train=5", "data.train: expected a mapping"),
    ("model.config=[1, 2]", "model.config: expected a mapping"),
    ("description=[a, b]", "description: expected a string"),
    ("train=3", "train: expected a mapping"),
    ("train.learning_rate=-1", "train.learning_rate: must be positive"),
    ("train.max_padding=1.5", "train.max_padding"),
    ("train.sortagrad_epochs=-1", "train.sortagrad_epochs: must be >= 0"),
    ("data.min_duration=30", "min_duration"),
])
def test_wrong_types_and_values_are_rejected(override: str, match: str) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(QUICKSTART, [override])
    assert match in one_line(exc)


@pytest.mark.parametrize("recipe, override, match", [
    ("tts/vocoder_quickstart.yaml", "data.augment.noise=synthetic", "data.augment.noise: the vocoder task does not augment"),
    ("tts/quickstart.yaml", "data.augment.speed=[0.9,1.1]", "data.augment.speed: the acoustic task does not augment"),
    ("ssl/quickstart.yaml", "data.augment.vtlp=0.1", "(it can: speed, noise, reverb)"),
    ("ssl/quickstart.yaml", "data.augment.trim=0.5", "data.augment.trim: the ssl task"),
])
def test_an_augmentation_a_task_cannot_apply_is_named(recipe: str, override: str, match: str) -> None:
    """A key the task would ignore is an error, not a silent no-op."""
    with pytest.raises(RecipeError) as exc:
        load_recipe(REPO / "recipes" / recipe, [override])
    assert match in one_line(exc)
    for ok in ("data.augment.speed=[0.9,1.1]", "data.augment.noise=synthetic", "data.augment.reverb=synthetic"):
        load_recipe(REPO / "recipes" / "ssl" / "quickstart.yaml", [ok])


def test_recipe_from_dict_does_not_mutate_and_round_trips() -> None:
    raw = {**MINIMAL, "train": {"epochs": 2}}
    r = recipe_from_dict(raw, ["train.epochs=3"])
    assert r.train.epochs == 3
    assert recipe_from_dict(r.to_dict()) == r


@pytest.mark.parametrize("family", ["parakeet", "wav2vec2"])
def test_tiny_overrides_build_a_consistent_model(family: str, tiny_recipe_overrides) -> None:
    """The conftest's tiny configs are valid recipes and build a small CTC model whose head fits."""
    from pipeline.data.text import build_vocab
    from pipeline.models.asr import build_model, character_tokenizer, detect_family, preflight

    r = load_recipe(QUICKSTART, tiny_recipe_overrides(family))
    assert r.model.family == family and r.train.threads == 1 and r.train.max_minutes is None
    fam = detect_family(r.model)
    tok = character_tokenizer(build_vocab(["hello world"], blank_last=fam.blank_last))
    model = build_model(fam, r.model, tok, keep_head=False)
    preflight(model, tok)
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_train_script_unknown_key_is_a_one_line_error(run_script, tmp_path: Path) -> None:
    proc = run_script("train.py", str(QUICKSTART), f"output_dir={tmp_path / 'out'}", "train.learning_rat=0.1",
                      timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "'train.learning_rat'" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "out").exists()
