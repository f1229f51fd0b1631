"""vlinterp.eval.datasets: one reader per format, the same items, bad data named in one line."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from vlinterp.core.errors import ConfigError, DataError, UnknownNameError, UsageError
from vlinterp.eval import shapes as world
from vlinterp.eval.datasets import FORMATS, check_spec, open_dataset, parse_dataset_spec, subsample

H, W = 30, 40


def _png(path, seed=0, size=(W, H)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).save(path)
    return a


def coco_fixture(tmp_path, anns=None, images=None, categories=None):
    """Three 40x30 images; annotations: a two-part polygon, an uncompressed crowd RLE, a compressed
    RLE, one annotation without segmentation."""
    from pycocotools import mask as mu

    img_dir = tmp_path / "imgs"
    for k in range(3):
        _png(str(img_dir / f"{k}.png"), k)
    m = np.zeros((H, W), np.uint8)
    m[5:12, 20:31] = 1
    m[20:25, 2:6] = 1
    crowd = {"size": [H, W], "counts": [int(c) for c in _uncompressed(m)]}
    m2 = np.zeros((H, W), np.uint8)
    m2[1:29, 1:3] = 1
    rle = mu.encode(np.asfortranarray(m2))
    data = {
        "images": images if images is not None else [{"id": 10 + k, "file_name": f"{k}.png", "width": W, "height": H}
                                                     for k in range(3)],
        "categories": categories if categories is not None else [
            {"id": 1, "name": "dog", "supercategory": "animal"}, {"id": 2, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"}, {"id": 4, "name": "kite", "supercategory": "sports"}],
        "annotations": anns if anns is not None else [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [2.0, 3.0, 10.5, 8.0], "iscrowd": 0,
             "segmentation": [[2, 3, 12.5, 3, 12.5, 11, 2, 11], [20, 20, 30, 20, 25, 28]]},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [2, 5, 29, 20], "iscrowd": 1, "segmentation": crowd},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1, 1, 2, 28], "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}},
            {"id": 4, "image_id": 11, "category_id": 1, "bbox": [30, 2, 5, 5]},
            {"id": 5, "image_id": 12, "category_id": 2, "bbox": [0, 0, 4, 4], "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
            {"id": 6, "image_id": 12, "category_id": 4, "bbox": [5, 5, 4, 4], "segmentation": [[5, 5, 9, 5, 9, 9]]},
            {"id": 7, "image_id": 12, "category_id": 1, "bbox": [10, 5, 4, 4], "segmentation": [[10, 5, 14, 5, 14, 9]]},
        ]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return str(path), str(img_dir), data


def _uncompressed(m):
    """Column-major run lengths (COCO's uncompressed RLE), starting with zeros."""
    flat = m.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return runs


# --------------------------------------------------------------------------- specs
def test_specs_parse_the_same_everywhere(tmp_path):
    assert parse_dataset_spec("shapes:test:256:11") == ("shapes", {"split": "test", "n": "256", "seed": "11"})
    assert parse_dataset_spec("coco:a.json:imgs:on_error=skip") == ("coco", {"annotations": "a.json", "images": "imgs",
                                                                              "on_error": "skip"})
    assert parse_dataset_spec("pope:f.json::instances=i.json") == ("pope", {"file": "f.json", "instances": "i.json"})
    assert parse_dataset_spec("hf:d:validation") == ("hf", {"path": "d", "split": "validation"})
    p = tmp_path / "x.jsonl"
    p.write_text('{"prompt": "hi"}\n')
    assert parse_dataset_spec(str(p)) == ("jsonl", {"file": str(p)})
    assert set(FORMATS) == {"shapes", "coco", "chair", "pope", "jsonl", "hf", "folder"}
    assert check_spec("shapes:test:8") == "shapes:test:8"


@pytest.mark.parametrize("spec, err, match", [
    ("nope:x", UnknownNameError, r"unknown dataset format 'nope'; did you mean pope"),
    ("missing.jsonl", DataError, r"'missing.jsonl': no such file"),
    ("jsonl:missing.jsonl", DataError, r"'missing.jsonl' does not exist"),
    ("coco:missing.json", DataError, r"COCO annotations 'missing.json' does not exist"),
    ("shapes:test:many", UnknownNameError, r"unknown shapes item kind 'many'"),
    ("shapes:test:capton", UnknownNameError, r"unknown shapes item kind 'capton'; did you mean caption"),
    ("shapes:test:4:1:zz", ConfigError, r"unknown item kind 'zz'"),
    ("shapes:a:1:2:scene:extra", ConfigError, r"at most 4 parts"),
    ("coco:x.json:y:bogus=1", ConfigError, r"unknown option\(s\) bogus"),
    ("", ConfigError, r"empty dataset spec"),
])
def test_bad_specs_are_one_line_errors(spec, err, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(err, match=match) as e:
        open_dataset(spec)
    assert "\n" not in str(e.value)


def test_subsample_is_deterministic_and_ordered():
    assert subsample(10, None, 3) == list(range(10)) and subsample(10, 4, None) == [0, 1, 2, 3]
    a = subsample(100, 7, 5)
    assert a == subsample(100, 7, 5) == sorted(a) and len(set(a)) == 7 and a != subsample(100, 7, 6)
    assert subsample(5, 9, 1) == [0, 1, 2, 3, 4]


# -------------------------------------------------------------------------- shapes
def test_shapes_spec_gives_the_native_items():
    ds = open_dataset("shapes:test:12:11")
    native = world.pope("test", 12, 11, "adversarial")
    got = ds.items("pope-adversarial")
    assert [(i.id, i.prompt, i.answer) for i in got] == [(i.id, i.prompt, i.answer) for i in native]
    # without N/SEED in the spec, the request's n/seed are the split's (what commands drew before specs)
    loose = open_dataset("shapes").items("count", n=5, seed=4)
    assert [i.id for i in loose] == [i.id for i in world.count("test", 5, 4)]
    # with them, n/seed sample the fixed split, in order, the same draw every time
    s1, s2 = ds.items("caption", n=4, seed=9), ds.items("caption", n=4, seed=9)
    assert [i.id for i in s1] == [i.id for i in s2] == [world.captions("test", 12, 11)[k].id for k in subsample(12, 4, 9)]
    scene = ds.items("scene", n=1)[0]
    assert scene.kind == "scene" and scene.prompt is None and {q["kind"] for q in scene.meta["questions"]} >= {"presence", "count"}
    with pytest.raises(UsageError, match="not 'class'"):
        ds.items("class")


# ---------------------------------------------------------------------------- COCO
def test_coco_masks_equal_pycocotools_annToMask(tmp_path, capsys):
    from pycocotools.coco import COCO

    path, imgs, data = coco_fixture(tmp_path)
    ds = open_dataset(f"coco:{path}:{imgs}")
    coco = COCO(path)
    capsys.readouterr()
    items = {int(i.id): i for i in ds.items("scene")}
    assert sorted(items) == [10, 11, 12] and len(ds) == 3
    for a in data["annotations"]:
        o = next(o for o in items[a["image_id"]].objects if o.attrs["annotation_id"] == a["id"])
        x, y, w, h = a["bbox"]
        assert o.box == (x, y, x + w, y + h) and o.name == coco.cats[a["category_id"]]["name"]
        if "segmentation" in a:
            want = coco.annToMask(a).astype(bool)
            assert o.mask.shape == (H, W) and o.mask.any() and np.array_equal(o.mask, want)
        else:
            assert o.mask is None
    crowd = items[10].objects[1]
    assert crowd.attrs["iscrowd"] is True and crowd.attrs["supercategory"] == "person"
    assert np.asarray(items[11].image).shape == (H, W, 3)


def test_coco_presence_questions_follow_pope(tmp_path):
    imgs = tmp_path / "i"
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(["person", "dog", "car", "kite", "apple", "bus"])]
    objs = {1: ["person", "dog", "car"], 2: ["person", "dog", "kite"], 3: ["person", "car", "apple"], 4: ["bus"]}
    images, anns = [], []
    for i, names in objs.items():
        _png(str(imgs / f"{i}.png"), i)
        images.append({"id": i, "file_name": f"{i}.png", "width": W, "height": H})
        for n in names:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": next(c["id"] for c in cats if c["name"] == n),
                         "bbox": [0, 0, 2, 2]})
    p = tmp_path / "inst.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    ds = open_dataset(f"coco:{p}:{imgs}")
    adv = ds.items("pope-adversarial")
    # images with >= 3 categories, 3 yes + 3 no each; image 4 (one object) asks nothing
    assert len(adv) == 18 and [i.answer for i in adv[:6]] == ["yes", "no"] * 3
    assert adv[0].prompt == "Is there a person in the image?" and adv[0].meta["obj_index"] == 0
    # adversarial: the absent category co-occurring most with the positive (person: dog 2, car 2 -> absent on image 1: kite)
    assert adv[1].meta["target"] == "kite" and adv[1].meta["neg_type"] == "adversarial"
    pop = ds.items("pope-popular")
    # popular: most frequent absent category first (image 1 lacks kite, apple, bus: each once; category order)
    assert [i.meta["target"] for i in pop[:6:2]] == ["person", "dog", "car"] and pop[1].meta["target"] == "kite"
    rnd, rnd2 = ds.items("pope-random"), open_dataset(f"coco:{p}:{imgs}").items("pope-random")
    assert [i.prompt for i in rnd] == [i.prompt for i in rnd2]
    for it in rnd:
        names = set(it.names())
        assert (it.meta["target"] in names) == (it.answer == "yes")
    other = open_dataset(f"coco:{p}:{imgs}:question_seed=5").items("pope-random")
    assert [i.prompt for i in other[::2]] == [i.prompt for i in rnd[::2]]


# ------------------------------------------------------------------- POPE / JSONL
def pope_fixture(tmp_path, lines, name="coco_pope_adversarial.json"):
    img_dir = tmp_path / "val"
    for f in {json.loads(ln)["image"] for ln in lines if ln.strip().startswith("{") and "image" in json.loads(ln)}:
        _png(str(img_dir / f))
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p), str(img_dir)


def test_pope_file_in_the_official_format(tmp_path):
    lines = [json.dumps({"question_id": 0, "image": "COCO_val2014_000000548882.jpg", "image_id": 548882,
                         "text": "Is there a dining table in the image?", "label": "yes"}),
             json.dumps({"question_id": 1, "image": "COCO_val2014_000000548882.jpg", "image_id": 548882,
                         "text": "Is there an oven in the image?", "label": "no"})]
    p, imgs = pope_fixture(tmp_path, lines)
    ds = open_dataset(f"pope:{p}:{imgs}")
    a, b = ds.items()
    assert (a.prompt, a.answer, a.kind, a.id) == ("Is there a dining table in the image?", "yes", "presence", "0")
    assert a.meta["target"] == "dining table" and b.meta["target"] == "oven" and a.meta["image_id"] == 548882
    assert a.meta["neg_type"] == "adversarial" and ds.items("pope-adversarial")[1].answer == "no"
    with pytest.raises(UsageError, match="adversarial negatives, not random"):
        ds.items("pope-random")


def test_jsonl_reads_every_spelling_and_kind(tmp_path):
    _png(str(tmp_path / "a.png"))
    rows = [{"id": "t1", "image": "a.png", "prompt": "is there a dog?", "target": "yes", "box": [1, 2, 10, 12], "object": "dog"},
            {"id": "s1", "image": "a.png", "text": "describe", "answer": "a dog"},
            {"image": "a.png", "question": "what colour?", "answer": "red", "context": "a red dog", "candidates": ["red", "blue"]},
            {"prompt": "no image here"}]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = open_dataset(f"jsonl:{p}")
    t, s, a, n = ds.items()
    assert (t.prompt, t.answer, t.objects[0].name, t.objects[0].box) == ("is there a dog?", "yes", "dog", (1.0, 2.0, 10.0, 12.0))
    assert (s.prompt, s.answer) == ("describe", "a dog") and a.meta == {"context": "a red dog", "candidates": ["red", "blue"]}
    assert a.id == "d.jsonl:3" and n.image is None and t.image.size == (W, H)
    # a file without kinds gives its lines whatever kind a command asks for
    assert len(ds.items("pope-adversarial")) == 4 and len(ds.items("count", n=2, seed=1)) == 2


def test_folder_of_class_folders(tmp_path):
    for c, k in [("cat", 0), ("cat", 1), ("dog", 2)]:
        _png(str(tmp_path / "f" / c / f"{k}.png"), k)
    items = open_dataset(f"folder:{tmp_path / 'f'}").items()
    assert [(i.answer, i.meta["label"]) for i in items] == [("cat", 0), ("cat", 0), ("dog", 1)]
    assert items[0].meta["candidates"] == ("cat", "dog") and items[0].kind == "class"
    _png(str(tmp_path / "f" / "loose.png"))
    with pytest.raises(DataError, match="loose.png: image outside the class folders"):
        open_dataset(f"folder:{tmp_path / 'f'}")
    assert len(open_dataset(f"folder:{tmp_path / 'f'}:on_error=skip").items()) == 3


# ------------------------------------------------------------------------------ HF
def test_hf_save_to_disk_parquet_and_detection_objects(tmp_path):
    import datasets

    ims = [Image.fromarray(_png(str(tmp_path / f"{k}.png"), k)) for k in range(3)]
    feats = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["no", "yes"]),
                               "objects": {"bbox": datasets.List(datasets.List(datasets.Value("float32"))),
                                           "category": datasets.List(datasets.ClassLabel(names=["cat", "dog"]))}})
    d = datasets.Dataset.from_dict({"image": ims, "question": ["q0", "q1", "q2"], "label": [1, 0, 1],
                                    "objects": [{"bbox": [[1, 2, 3, 4]], "category": [1]}, {"bbox": [], "category": []},
                                                {"bbox": [[0, 0, 5, 5], [5, 5, 2, 2]], "category": [0, 1]}]}, features=feats)
    datasets.DatasetDict({"validation": d}).save_to_disk(str(tmp_path / "dd"))
    items = open_dataset(f"hf:{tmp_path / 'dd'}").items()
    assert [(i.prompt, i.answer) for i in items] == [("q0", "yes"), ("q1", "no"), ("q2", "yes")]
    assert items[0].objects[0].name == "dog" and items[0].objects[0].box == (1.0, 2.0, 4.0, 6.0)
    assert np.array_equal(np.asarray(items[2].image), np.asarray(ims[2])) and items[1].id == "validation:1"
    d.to_parquet(str(tmp_path / "p.parquet"))
    got = open_dataset(f"hf:{tmp_path / 'p.parquet'}").items(n=2, seed=0)
    assert len(got) == 2 and all(np.asarray(g.image).shape == (H, W, 3) for g in got)
    with pytest.raises(DataError, match="has no split 'test'; splits: validation"):
        open_dataset(f"hf:{tmp_path / 'dd'}:test")


# ------------------------------------------------------------------------ bad data
def _coco_missing_key(tmp_path):
    path, imgs, data = coco_fixture(tmp_path)
    del data["annotations"][4]["category_id"]
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return f"coco:{path}:{imgs}", [r"instances\.json: annotation 5\b", "missing key 'category_id'"]


def _coco_missing_image(tmp_path):
    path, imgs, data = coco_fixture(tmp_path)
    data["annotations"][2]["image_id"] = 99
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return f"coco:{path}:{imgs}", [r"instances\.json: annotation 3\b", "annotation on a missing image", "99"]


def _coco_degenerate_polygon(tmp_path):
    path, imgs, data = coco_fixture(tmp_path)
    data["annotations"][5]["segmentation"] = [[5, 5, 9, 9]]
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return f"coco:{path}:{imgs}", [r"instances\.json: annotation 6 \(image 12\)", "degenerate polygon", "2 points"]


def _coco_no_categories(tmp_path):
    path, imgs, data = coco_fixture(tmp_path)
    del data["categories"]
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return f"coco:{path}:{imgs}", [r"instances\.json: missing 'categories'"]


def _coco_image_file_missing(tmp_path):
    path, imgs, _ = coco_fixture(tmp_path)
    os.remove(os.path.join(imgs, "1.png"))
    return f"coco:{path}:{imgs}", [r"instances\.json: image 11\b", "image file missing", "1.png"]


def _pope_unknown_category(tmp_path):
    path, imgs, _ = coco_fixture(tmp_path)
    lines = [json.dumps({"question_id": 0, "image": "0.png", "text": "Is there a dog in the image?", "label": "yes"}),
             json.dumps({"question_id": 1, "image": "0.png", "text": "Is there a unicorn in the image?", "label": "no"})]
    (tmp_path / "q_random.json").write_text("\n".join(lines))
    return f"pope:{tmp_path / 'q_random.json'}:{imgs}:instances={path}", [r"q_random\.json:2 \(question 1\)",
                                                                          "unknown category in the prompt", "'unicorn'"]


def _pope_bad_label(tmp_path):
    lines = [json.dumps({"question_id": 0, "image": "a.jpg", "text": "Is there a dog?", "label": "yes"}),
             json.dumps({"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "maybe"})]
    p, imgs = pope_fixture(tmp_path, lines, "pope_random.json")
    return f"pope:{p}:{imgs}", [r"pope_random\.json:2 \(question 1\)", "bad label", "'maybe'"]


def _hf_without_image(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(tmp_path / "txt"))
    return f"hf:{tmp_path / 'txt'}", [r"txt \(split", "no image column", "columns: text, label"]


def _jsonl_bad_box(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text(json.dumps({"id": "ok", "prompt": "x"}) + "\n" + json.dumps({"id": "q7", "prompt": "x", "box": [5, 5, 1]}) + "\n")
    return f"jsonl:{p}", [r"b\.jsonl:2 \(id q7\)", "bad box"]


BAD = {"coco missing key": _coco_missing_key, "coco annotation on a missing image": _coco_missing_image,
       "coco degenerate polygon": _coco_degenerate_polygon, "coco without categories": _coco_no_categories,
       "coco image file missing": _coco_image_file_missing, "pope unknown category in a prompt": _pope_unknown_category,
       "pope bad label": _pope_bad_label, "hf without an image column": _hf_without_image, "jsonl bad box": _jsonl_bad_box}


@pytest.mark.parametrize("row", list(BAD))
def test_bad_data_is_a_one_line_data_error_naming_file_and_record(row, tmp_path):
    spec, patterns = BAD[row](tmp_path)
    with pytest.raises(DataError) as e:
        open_dataset(spec).items()
    msg = str(e.value)
    assert "\n" not in msg
    for pat in patterns:
        assert __import__("re").search(pat, msg), f"{msg!r} lacks {pat!r}"


def test_skip_leaves_bad_records_out_and_says_why(tmp_path):
    path, imgs, data = coco_fixture(tmp_path)
    data["annotations"][5]["segmentation"] = [[5, 5, 9, 9]]     # image 12: degenerate polygon
    data["annotations"].append({"id": 9, "image_id": 77, "category_id": 1, "bbox": [0, 0, 1, 1]})  # no image 77
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(DataError):
        open_dataset(f"coco:{path}:{imgs}")
    ds = open_dataset(f"coco:{path}:{imgs}:on_error=skip")
    assert [i.id for i in ds.items()] == ["10", "11"]
    s = ds.summary()
    assert "skipped 2 bad record(s)" in s and "degenerate polygon" in s and "annotation on a missing image" in s
    assert open_dataset(f"coco:{path}:{imgs}:on_error=skip").summary() == s and "\n" not in s
    lines = [json.dumps({"image": "a.jpg", "text": "Is there a dog?", "label": lab}) for lab in ("yes", "nope", "no", "?")]
    p, im = pope_fixture(tmp_path, lines, "x.json")
    ds = open_dataset(f"pope:{p}:{im}:on_error=skip")
    assert [i.answer for i in ds.items()] == ["yes", "no"] and "skipped 2 bad record(s): bad label x2" in ds.summary()
