"""Predictor on every image kind a person may drop, and on files it must refuse."""
import io

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_digits
from core.data.images import MAX_PIXELS, ImageRefused, open_image, to_array
from core.serving.inference import Predictor
from pages.common.site import page_path
from test_images import REAL, REFUSED_FILES


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def digit_image() -> Image.Image:
    from sklearn.datasets import load_digits
    pixels = (load_digits().images[0] * 255 / 16).astype(np.uint8)     # a zero
    return Image.fromarray(pixels, "L").resize((32, 32))


def accepted_kinds() -> dict[str, bytes]:
    gray = digit_image()
    rgb = gray.convert("RGB")
    sixteen = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)   # mode I;16
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    rotated = rgb.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 8                  # "rotate 90 CW to view": undoes the rotation above
    return {"png-gray": encode(gray, "PNG"), "jpeg": encode(rgb, "JPEG", quality=95), "bmp": encode(rgb, "BMP"),
            "webp": encode(rgb, "WEBP", lossless=True), "gif": gif.getvalue(),
            "rgba": encode(rgb.convert("RGBA"), "PNG"), "palette": encode(rgb.convert("P"), "PNG"),
            "16-bit": encode(sixteen, "PNG"), "cmyk": encode(rgb.convert("CMYK"), "JPEG", quality=95),
            "exif-rotated": encode(rotated, "JPEG", quality=95, exif=exif)}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, train):
    from core.runs.store import RunStore
    store = RunStore(tmp_path_factory.mktemp("inference") / "runs")
    run_id = store.create_run(tiny_digits(image_size=16, epochs=4, batch_size=32))
    assert train(store, run_id) == "completed"
    predictor = Predictor(store, run_id)
    predictor.run_dir = store.run_dir(run_id)      # for the CLI test
    return predictor


@pytest.mark.parametrize("kind", list(accepted_kinds()))
def test_every_common_image_kind_is_predicted(predictor, kind):
    result = predictor.predict(accepted_kinds()[kind], top_k=3)
    assert "error" not in result, result
    assert len(result["top_k"]) == 3 and result["latency_ms"] > 0
    assert sum(row["prob"] for row in result["top_k"]) <= 1.0 + 1e-6
    assert result["top_k"][0]["class"] == "0", (kind, result)


def test_preprocessing_matches_the_run(predictor):
    pixels = predictor.preprocess(accepted_kinds()["jpeg"])
    assert pixels.shape == (1, 16, 16) and pixels.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped():
    image = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_array(open_image(encode(image, "PNG")), 4, 1).min() == 255


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"this is a text file, not a picture", "not an image"),
    (encode(Image.new("RGB", (64, 64), "white"), "PNG")[:120], "truncated"),
])
def test_bad_files_are_refused_with_a_message(predictor, data, message):
    result = predictor.predict(data)
    assert set(result) == {"error"} and message in result["error"]


def test_decompression_bomb_is_refused_before_decoding():
    side = int(MAX_PIXELS ** 0.5) + 100
    bomb = encode(Image.new("1", (side, side)), "PNG")     # small file, huge image
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageRefused, match="too large"):
        open_image(bomb)


def test_cli_predict(predictor, tmp_path, cli):
    import json
    good, bad = tmp_path / "zero.png", tmp_path / "notes.txt"
    good.write_bytes(accepted_kinds()["png-gray"])
    bad.write_text("not a picture")
    run_dir = predictor.run_dir
    ok = cli("predict", "--top-k", "2", run_dir.name, good, runs=run_dir.parent)
    assert ok.returncode == 0, ok.stderr
    [line] = [json.loads(text) for text in ok.stdout.splitlines()]
    assert line["file"] == str(good) and line["top_k"][0]["class"] == "0" and len(line["top_k"]) == 2
    mixed = cli("predict", "--top-k", "2", run_dir.name, good, bad, runs=run_dir.parent)
    assert mixed.returncode == 3
    lines = [json.loads(text) for text in mixed.stdout.splitlines()]
    assert "top_k" in lines[0] and lines[1] == {"file": str(bad), "error": lines[1]["error"]}
    assert "not an image" in lines[1]["error"]


@pytest.mark.parametrize("name", list(REFUSED_FILES))
def test_every_odd_file_is_an_error_not_an_exception(predictor, name):
    """The HTTP service and the CLI rely on this: a refused file is {"error"}, whatever PIL raised."""
    data, reason = REFUSED_FILES[name]
    result = predictor.predict(data)
    assert set(result) == {"error"} and reason in result["error"]


@pytest.mark.parametrize("name", ["psd", "spider", "tiff-lab"])
def test_less_common_formats_are_predicted(predictor, name):
    result = predictor.predict(REAL[name], top_k=2)
    assert "error" not in result and len(result["top_k"]) == 2


def test_cli_predict_goes_on_after_a_refused_file(predictor, tmp_path, cli):
    import json
    names = ["zero.png", "texture.dds", "cut.psd", "missing.png", "zero.jpg"]
    (tmp_path / names[0]).write_bytes(accepted_kinds()["png-gray"])
    (tmp_path / names[1]).write_bytes(REFUSED_FILES["dds-unknown-pixel-format"][0])
    (tmp_path / names[2]).write_bytes(REFUSED_FILES["psd-truncated"][0])
    (tmp_path / names[4]).write_bytes(accepted_kinds()["jpeg"])
    run_dir = predictor.run_dir
    result = cli("predict", run_dir.name, *(tmp_path / name for name in names), runs=run_dir.parent)
    assert result.returncode == 3, result.stderr
    lines = [json.loads(text) for text in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(tmp_path / name) for name in names]
    assert [line["top_k"][0]["class"] for line in (lines[0], lines[4])] == ["0", "0"]
    assert "DDS: Unimplemented pixel format" in lines[1]["error"]
    assert "PSD: image file is truncated" in lines[2]["error"]
    assert lines[3]["error"] == "cannot read file: No such file or directory"


def test_predict_page_refuses_odd_files_and_predicts_the_rest(app, finished_run):
    uploads = [("zero.png", accepted_kinds()["png-gray"]),
               ("texture.dds", REFUSED_FILES["dds-unknown-pixel-format"][0]),
               ("stack.spi", REAL["spider"]), ("scan.tif", REAL["tiff-lab"]),       # st.image fails on these two
               ("cut.psd", REFUSED_FILES["psd-truncated"][0]), ("zero.jpg", accepted_kinds()["jpeg"])]
    app.run().switch_page(page_path("predict")).run()
    app.file_uploader(key="pr_files").set_value([(name, data, "image/png") for name, data in uploads]).run()
    assert not app.exception, [e.value for e in app.exception]
    warnings = [w.value for w in app.warning]
    assert any("texture.dds" in w and "DDS: Unimplemented pixel format" in w for w in warnings)
    assert any("cut.psd" in w and "PSD: image file is truncated" in w for w in warnings)
    [table] = [frame.value for frame in app.dataframe]
    assert table["file"].tolist() == [name for name, _ in uploads]
    assert table["error"].isna().tolist() == [True, False, True, True, False, True]
    assert table["predicted"].tolist()[-1] == "0"
