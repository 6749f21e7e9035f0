"""params.yaml validation: every section parses, unknown/misspelled keys and bad types are errors that name them."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.params import ConfigError, build_params, deep_merge, load_params, load_raw

ROOT = Path(__file__).resolve().parents[1]


def raw_default() -> dict:
    return load_raw(ROOT / "params.yaml")


def errors_for(mutate) -> str:
    raw = raw_default()
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        build_params(raw)
    return str(e.value)


def test_default_params_parse_every_section():
    p = load_params(ROOT / "params.yaml")
    assert p.data.kind == "shapes" and p.data.image_size == p.tokenizer.model.image_size
    assert len(p.table1_models) >= 2
    for name, spec in p.models.items():
        # taken from the tokenizer and the data, never repeated in the model section
        assert spec.model.vocab_size == p.tokenizer.model.vocab_size
        assert spec.model.patch_nums == p.tokenizer.model.patch_nums
        assert spec.model.z_channels == p.tokenizer.model.z_channels
        assert spec.model.num_classes == p.data.num_classes
    assert p.sample.per_class >= 1 and p.score.extractor == "evalnet"


@pytest.mark.parametrize("cfg", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_files_parse(cfg):
    p = load_params(ROOT / "params.yaml", [cfg])
    assert p.table1_models


def test_unknown_top_level_key_names_it_and_valid_keys():
    msg = errors_for(lambda r: r.update(sampel={"cfg": 2.0}))
    assert "'sampel'" in msg and "sample" in msg and "tokenizer" in msg


@pytest.mark.parametrize("section,key", [("data", "image_szie"), ("sample", "top_kk"), ("score", "extracter"),
                                         ("evalnet", "widht"), ("table1", "model")])
def test_misspelled_section_key(section, key):
    msg = errors_for(lambda r: r.setdefault(section, {}).update({key: 1}))
    assert f"{section}.{key}" in msg and "valid keys" in msg


def test_misspelled_nested_keys():
    msg = errors_for(lambda r: r["tokenizer"]["model"].update(vocab_sise=8))
    assert "tokenizer.model.vocab_sise" in msg and "vocab_size" in msg
    msg = errors_for(lambda r: r["tokenizer"].update(modle={}))
    assert "tokenizer.modle" in msg
    name = next(iter(raw_default()["models"]))
    msg = errors_for(lambda r: r["models"][name]["train"].update(batchsize=8))
    assert f"models.{name}.train.batchsize" in msg and "batch_size" in msg
    msg = errors_for(lambda r: r["models"][name]["model"].update(detph=8))
    assert f"models.{name}.model.detph" in msg and "depth" in msg


def test_tokenizer_fields_must_not_be_repeated_in_models():
    name = next(iter(raw_default()["models"]))
    msg = errors_for(lambda r: r["models"][name]["model"].update(vocab_size=512))
    assert f"models.{name}.model.vocab_size" in msg and "tokenizer.model" in msg


@pytest.mark.parametrize("section,key,value", [("data", "image_size", "32"), ("sample", "per_class", 1.5),
                                               ("sample", "more_smooth", "yes"), ("score", "device", 0)])
def test_type_errors_name_the_key(section, key, value):
    msg = errors_for(lambda r: r.setdefault(section, {}).update({key: value}))
    assert f"{section}.{key}" in msg


def test_bad_values_and_consistency():
    assert "extractor" in errors_for(lambda r: r["score"].update(extractor="clip"))
    assert "data.image_size" in errors_for(lambda r: r["data"].update(image_size=64))  # tokenizer gives 32 px
    assert "table1.models" in errors_for(lambda r: r["table1"].update(models=["var-d99"]))
    assert "seed" in errors_for(lambda r: r.update(seed="zero"))
    assert "sample.precision" in errors_for(lambda r: r["sample"].update(precision="fp8", fast=True))
    assert "sample.fast" in errors_for(lambda r: r["sample"].update(precision="bf16"))   # bf16 needs the engine
    assert "sample.fast" in errors_for(lambda r: r["sample"].update(compile=True))


def test_top_level_seed_is_the_default_of_section_seeds():
    raw = raw_default()
    raw["seed"] = 7
    raw["sample"]["seed"] = 3
    p = build_params(raw)
    assert p.data.seed == 7 and p.evalnet.seed == 7 and p.sample.seed == 3
    assert all(s.train.seed == 7 for s in p.models.values())


def test_override_file_merges_and_names_the_files(tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"sample": {"sampler": {"cfg": 3.0}}}))
    p = load_params(ROOT / "params.yaml", [over])
    base = load_params(ROOT / "params.yaml")
    assert p.sample.sampler.cfg == 3.0 and p.sample.per_class == base.sample.per_class
    assert p.sample.sampler.top_k == base.sample.sampler.top_k == 19      # a nested section merges key by key
    over.write_text(yaml.safe_dump({"sample": {"cgf": 3.0}}))
    with pytest.raises(ConfigError, match=r"over\.yaml.*sample\.cgf"):
        load_params(ROOT / "params.yaml", [over])


def test_deep_merge():
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": 3}, "l": [9]}) == \
        {"a": {"b": 3, "c": 2}, "l": [9]}
