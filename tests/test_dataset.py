"""Training and evaluation read and pair images the way ``process`` reads them."""

import numpy as np
from PIL import Image

from tiledehaze.dataset import read_rgb
from tiledehaze.evaluate import match_pairs as eval_pairs
from tiledehaze.io import open_image
from tiledehaze.train.data import match_pairs as train_pairs


def test_dataset_images_are_turned_upright_by_their_exif_orientation_as_process_does(tmp_path):
    src = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    pixels = np.zeros((40, 64, 3), np.uint8)
    pixels[:, :8] = 255  # a white stripe on the stored image's left edge
    Image.fromarray(pixels).save(src, quality=98, exif=exif.tobytes())
    image = read_rgb(src)
    assert image.shape == (64, 40, 3) and image.dtype == np.float32
    assert image[:8].mean() > 0.9 and image[8:].mean() < 0.1  # the stripe is now on top
    with open_image(src) as reader:
        np.testing.assert_allclose(image, reader.read(0, 64) / np.float32(255), atol=1e-6)


def test_training_and_evaluation_pair_reside_names_by_one_rule(tmp_path):
    for folder, names in (("hazy", ["1400_9.png", "0001_0.8_0.2.png", "same.png"]),
                          ("clear", ["1400.png", "0001.png", "same.png"])):
        (tmp_path / folder).mkdir()
        for name in names:
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / folder / name)
    by_train = {h.name: c.name for h, c in train_pairs(tmp_path / "hazy", tmp_path / "clear")}
    by_eval = {p.hazy.name: p.clear.name for p in eval_pairs(tmp_path / "hazy", tmp_path / "clear")}
    assert by_train == by_eval == {"1400_9.png": "1400.png", "0001_0.8_0.2.png": "0001.png", "same.png": "same.png"}
