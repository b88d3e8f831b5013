"""Pair sources: COCO folders, JSONL/CSV folders and saved HF data sets give back exactly the
images and captions that were written, grouped per image; unreadable images are counted under
on_error='skip' and stop iteration under 'fail'; the registry finds each kind by name or path."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import fixtures_models as fm
from vlmsae import data
from vlmsae.data import DataNotFoundError, UnreadableImageError


def _coco_folder(root, n=4, missing=(), corrupt=()):
    """A COCO-format folder: annotations/captions_val.json + val/ images, 2-3 captions per image.

    Image ids are given in shuffled order and annotation ids out of order, so the source must sort."""
    images = fm.random_images(n, seed=7)
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    info, anns, truth = [], [], {}
    for k, image_id in enumerate([30, 10, 40, 20][:n]):
        name = f"{image_id:012d}.jpg"
        if k in corrupt:
            (root / "val" / name).write_bytes(b"\x00garbage")
        elif k not in missing:
            images[k].save(root / "val" / name, format="PNG")  # PNG bytes: lossless, whatever the suffix
        info.append({"id": image_id, "file_name": name, "height": 32, "width": 32})
        caps = [f"caption {j} of image {image_id}" for j in range(2 + k % 2)]
        ann_ids = [1000 - 10 * image_id - j for j in range(len(caps))][::-1]  # ascending ids = caption order
        anns += [{"id": a, "image_id": image_id, "caption": c} for a, c in zip(ann_ids, caps)]
        truth[image_id] = (np.asarray(images[k]), caps)
    anns.reverse()
    (root / "annotations" / "captions_val.json").write_text(json.dumps({"images": info, "annotations": anns}))
    return truth


def test_coco_items_sorted_by_id_with_their_captions(tmp_path):
    truth = _coco_folder(tmp_path)
    source = data.load(f"coco:{tmp_path}")
    assert len(source) == 4 and [source.id_of(i) for i in range(4)] == [10, 20, 30, 40]
    for image, captions, image_id in source:
        assert captions == truth[image_id][1]
        np.testing.assert_array_equal(np.asarray(image), truth[image_id][0])
    assert source.config["source"] == "coco" and data.load(str(tmp_path)).config == source.config


def test_coco_limit_and_split_choice(tmp_path):
    _coco_folder(tmp_path)
    assert len(data.load(f"coco:{tmp_path}", limit=2)) == 2
    (tmp_path / "annotations" / "captions_train.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="several COCO splits.*split="):
        data.load(f"coco:{tmp_path}")
    assert len(data.load(f"coco:{tmp_path}", split="val")) == 4
    with pytest.raises(DataNotFoundError, match="captions_test.json"):
        data.load(f"coco:{tmp_path}", split="test")


def test_unreadable_images_are_counted_under_skip_and_stop_under_fail(tmp_path):
    truth = _coco_folder(tmp_path, missing=(1,), corrupt=(2,))  # image ids 10 (missing) and 40 (corrupt)
    source = data.load(f"coco:{tmp_path}")
    with pytest.warns(UserWarning, match="2 unreadable image"):
        items = list(source)
    assert [item[2] for item in items] == [20, 30]
    assert source.errors.count == 2 and any("10" in e for e in source.errors.examples)
    with pytest.raises(UnreadableImageError):
        source[0]
    failing = data.load(f"coco:{tmp_path}", on_error="fail")
    with pytest.raises(ValueError, match="item 10.*on_error='skip'"):
        list(failing)
    assert truth  # the folder was written
    with pytest.raises(ValueError, match="on_error must be"):
        data.load(f"coco:{tmp_path}", on_error="ignore")


def test_jsonl_folder_groups_captions_per_image(tmp_path):
    index = fm.write_pair_folder(tmp_path, n=3, captions_per_image=2, seed=1)
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    images = fm.random_images(3, seed=1)
    for source in (data.load(f"folder:{tmp_path}"), data.load(str(index)), data.load(str(tmp_path))):
        assert len(source) == 3
        for i, (image, captions, item_id) in enumerate(source):
            assert item_id == f"item{i}"
            assert captions == [r["caption"] for r in rows if r["image"] == f"img_{i}.png"]
            np.testing.assert_array_equal(np.asarray(image), np.asarray(images[i]))


def test_csv_folder_and_captions_list_rows(tmp_path):
    images = fm.random_images(2, seed=2)
    for i, image in enumerate(images):
        image.save(tmp_path / f"{i}.png")
    with open(tmp_path / "index.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["image", "caption"], ["1.png", "one"], ["0.png", "zero"], ["1.png", "uno"]])
    source = data.load(f"folder:{tmp_path}")
    assert [(source.captions_of(i), source.id_of(i)) for i in range(2)] == [(["one", "uno"], "1.png"),
                                                                            (["zero"], "0.png")]
    np.testing.assert_array_equal(np.asarray(source[1][0]), np.asarray(images[0]))
    jsonl = tmp_path / "sub" / "list.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text(json.dumps({"image": "../0.png", "captions": ["a", "b"]}) + "\n")
    assert data.load(str(jsonl)).captions_of(0) == ["a", "b"]


def test_folder_index_errors_name_the_fix(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "x.png"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1 needs an 'image' and a 'caption'"):
        data.load(f"folder:{tmp_path}")
    (tmp_path / "other.csv").write_text("image,caption\n")
    with pytest.raises(ValueError, match="several"):
        data.load(f"folder:{tmp_path}")


def test_saved_hf_dataset_round_trips(tmp_path):
    import datasets

    images = fm.random_images(3, seed=4)
    captions = [["red one", "first"], ["second"], ["third", "3rd", "iii"]]
    ds = datasets.Dataset.from_dict({"image": images, "captions": captions, "image_id": [7, 8, 9]})
    ds = ds.cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match="splits.*split="):
        data.load(f"hf:{tmp_path / 'dd'}")
    source = data.load(str(tmp_path / "dd"), split="train")  # found by content
    assert len(source) == 3 and source.image_column == "image" and source.caption_column == "captions"
    for i, (image, caps, item_id) in enumerate(source):
        assert caps == captions[i] and item_id == 7 + i
        np.testing.assert_array_equal(np.asarray(image), np.asarray(images[i]))
    assert len(data.load(f"hf:{tmp_path / 'dd'}", split="test")) == 1


def test_hf_dataset_with_image_paths_and_missing_file(tmp_path):
    import datasets

    images = fm.random_images(2, seed=5)
    images[0].save(tmp_path / "a.png")
    ds = datasets.Dataset.from_dict({"file_name": [str(tmp_path / "a.png"), str(tmp_path / "gone.png")],
                                     "text": ["a", "gone"]})
    ds.save_to_disk(str(tmp_path / "ds"))
    source = data.load(f"hf:{tmp_path / 'ds'}")
    np.testing.assert_array_equal(np.asarray(source[0][0]), np.asarray(images[0]))
    with pytest.warns(UserWarning, match="1 unreadable"):
        assert [item[1] for item in source] == [["a"]]


def test_missing_hub_dataset_says_how_to_fetch(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    with pytest.raises(DataNotFoundError, match="save_to_disk"):
        data.load("hf:vlmsae-no-such-user/no-such-dataset")


def test_registry_shapes_and_unknown_names():
    shapes = data.load("shapes", n=3, seed=1)
    assert len(shapes) == 3 and data.describe(shapes)["source"] == "shapes"
    with pytest.raises(ValueError, match="unknown data set.*coco:<dir>"):
        data.load("no-such-thing-here")
