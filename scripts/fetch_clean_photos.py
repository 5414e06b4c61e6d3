"""Fetch clean photographs from Debian artwork packages into an ignored folder.

Three groups, kept apart so that sets built from one never share a photograph with another:

- ``train``: the photographs of ``lomiri-wallpapers-16.04`` and ``lomiri-wallpapers-20.04``
  (landscapes, plants, objects; the abstract graphics are skipped). ``ukui-wallpapers`` was
  looked at too: all of its images are graphics, none is a photograph, so it adds nothing.
  Training uses it; its validation split comes from this group only.
- ``train_plasma``: the eight clean photographs of ``plasma-workspace-wallpapers`` (pier,
  cups, boats at dusk, leaves, a building's facade, a kite in the sky, moss, a forest path);
  its graphics and the photographs of fog or dusk haze (``ColdRipple``, ``DarkestHour``,
  ``summer_1am``) are skipped. A second training folder, so that recipes name it.
- ``heldout``: the photographs in ``mate-backgrounds`` (``nature/``), used only by
  ``scripts/make_eval_set2.py`` for the second held-out synthetic set, never in training or
  in choosing a recipe.

Each package is fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a
temporary folder; the chosen files are copied to ``OUT/<group>/`` and ``OUT/SOURCES.md``
lists every file with its package, author and licence (from the package's copyright file).
The images are never committed.

    python scripts/fetch_clean_photos.py --out data/clean
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: package -> {file name: (author, licence)}; licences as the package's copyright file states them
PHOTOS: dict[str, dict[str, dict[str, tuple[str, str]]]] = {
    "train": {
        "lomiri-wallpapers-16.04": {
            "Bridge_by_Sander_Klootwijk.jpg": ("Sander Klootwijk", "CC-BY-SA-4.0"),
            "Dragonfly_by_Bolly.jpg": ("Bolly", "CC-BY-SA-4.0"),
            "Picture_0B_by_freespace.jpg": ("Trevor Freespace", "CC-BY-4.0"),
            "Picture_1A_by_freespace.jpg": ("Trevor Freespace", "CC-BY-4.0"),
            "Wine_by_Jakkub_Mede.jpg": ("Jakub Mede", "CC-BY-4.0"),
            "aitzgorri_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
            "free_by_Peter_Nerlich.jpg": ("Peter Nerlich", "CC-BY-SA-4.0"),
            "friends_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
            "greentock_by_Peter_Nerlich.jpg": ("Peter Nerlich", "CC-BY-SA-4.0"),
            "life_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
            "picosdeeuropa_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
            "seeding_by_Clements_Engelhardt.jpg": ("Clemens Engelhardt", "CC0-1.0"),
            "sunset_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi", "CC-BY-4.0"),
        },
        "lomiri-wallpapers-20.04": {
            "Kleiber_by_Lukas_Baubkus.jpg": ("Lukas Baubkus", "CC-BY-SA-3.0"),
        },
    },
    "train_plasma": {
        # one wallpaper is a folder of sizes: the largest is copied as <wallpaper>.jpg
        "plasma-workspace-wallpapers": {
            f"{name}/contents/images/2560x1600.jpg": (author, "LGPL-3.0")
            for name, author in (("BytheWater", "Maciej Wiklo"), ("ColorfulCups", "Dmitri Popov"),
                                 ("EveningGlow", "Ian Hex"), ("FallenLeaf", "Martin Klapetek"),
                                 ("Grey", "Sigi Sagi"), ("Kite", "Risto Saukonpää"),
                                 ("OneStandsOut", "Risto Saukonpää"), ("Path", "Risto Saukonpää"))
        },
    },
    "heldout": {
        "mate-backgrounds": {
            name: ("see the package's AUTHORS file", "GPL-2+")
            for name in ("Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
                         "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg")
        },
    },
}


def fetch(package: str, work: Path) -> Path:
    """Download and unpack one Debian package; returns the folder it was unpacked into."""
    subprocess.run(["apt-get", "download", package], cwd=work, check=True, capture_output=True)
    (deb,) = work.glob(f"{package}_*.deb")
    root = work / package
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/clean"))
    args = parser.parse_args(argv)
    lines = ["# Clean photographs (not committed)", "", "| group | file | package | author | licence |",
             "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for group, packages in PHOTOS.items():
            dest = args.out / group
            dest.mkdir(parents=True, exist_ok=True)
            for package, files in packages.items():
                root = fetch(package, Path(tmp))
                found = [p for p in root.rglob("*") if p.is_file()]
                for name, (author, licence) in files.items():
                    match = [p for p in found if p.as_posix().endswith("/" + name)]
                    if not match:
                        print(f"{package} no longer holds {name}", file=sys.stderr)
                        return 1
                    target = name if "/" not in name else name.split("/")[0] + Path(name).suffix
                    shutil.copyfile(match[0], dest / target)
                    lines.append(f"| {group} | {target} | {package} | {author} | {licence} |")
    (args.out / "SOURCES.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {sum(len(f) for p in PHOTOS.values() for f in p.values())} photographs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
