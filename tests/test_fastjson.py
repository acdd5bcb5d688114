"""detector.fastjson parses exactly as the standard library does, errors included."""

import json
import math

import pytest

from detector import fastjson


def test_same_objects_as_json_module():
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "x": [0.1, 1e-7, 123456.789, -0.0, 2**40],
        "s": "ünïcode",
    }
    text = json.dumps(data)
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(text.encode()) == json.loads(text)
    floats = fastjson.loads(json.dumps([0.1 * k for k in range(1000)]))
    assert floats == [0.1 * k for k in range(1000)]  # bit-identical round trip


def test_nan_literals_fall_back_to_json():
    parsed = fastjson.loads(json.dumps([{"score": float("nan")}, {"score": float("inf")}]))
    assert math.isnan(parsed[0]["score"]) and parsed[1]["score"] == float("inf")


def test_invalid_json_raises_json_error_with_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"a": 1},\n {"b": }]')
    with pytest.raises(json.JSONDecodeError) as info:
        fastjson.load_file(path)
    assert info.value.lineno == 2
