#!/usr/bin/env python
"""Fetch a small set of real, freely licensed photographs and build training / eval crops.

Sources (all reached through package registries, nothing from a model or data hub):

* Debian packages ``mate-backgrounds``, ``plasma-workspace-wallpapers``, ``lxqt-themes`` (its
  photographic wallpapers), ``kphotoalbum`` (its demo album), ``sddm-theme-maldives``,
  ``kodi-data`` and ``digikam-data`` (one or two photos each) (``apt-get download`` +
  ``dpkg -x``; ``apt-get update`` is run once if the download fails);
* the Debian package ``gcompris-qt-data``: the photographs of the educational suite's
  activities (animals, monuments, the sea), each read from its activity's Qt resource file
  (``.rcc``) and saved as PNG; the per-file author and licence of the activity's README inside
  the same resource file are recorded beside Debian's;
* the Debian package ``jigzo-data``: the photographs of the jigsaw game's puzzles, each read
  from its ``.pzl`` file (the photo is the ``image`` rectangle of the texture atlas inside);
* photographs bundled with scikit-image (``skimage.data``) and scikit-learn
  (``sklearn.datasets.load_sample_image``), matplotlib's ``grace_hopper.jpg`` (read from
  an installed matplotlib, else from its wheel fetched with ``pip download --no-deps``), and
  SciPy's ``face`` and ``ascent`` (``scipy/misc/*.dat``, bundled until SciPy 1.11: read from an
  installed SciPy that has them, else from a ``scipy<1.12`` wheel fetched the same way).

Also reviewed, with no photograph in them (every image is a render, an illustration or a logo;
see :data:`PACKAGES_WITHOUT_PHOTOS`): ``gnome-backgrounds``, ``ukui-wallpapers``,
``sway-backgrounds``. The ``lomiri-wallpapers`` packages are reserved for independent testing
of the models trained on this data: the script refuses them (:data:`FORBIDDEN_PACKAGES`).

Which files are photographs was decided by hand -- by reading each package's copyright file /
per-wallpaper metadata and by looking at every image -- and is written below as explicit lists
(:data:`CATALOGUE` for what is kept, :data:`REJECTED` for what is not, each with its reason).
The held-out evaluation photos are the entries whose ``split`` is ``"eval"``.

Output layout under ``--out`` (default ``data/photos``)::

    originals/<id>.<ext>              the kept photographs (Debian files copied byte for byte,
                                      scikit-image / scikit-learn arrays saved as PNG)
    licenses/                         the packages' copyright files, each kept wallpaper's
                                      metadata, scikit-image's LICENSE and scikit-learn's
                                      image README
    LICENSES.json                     per photo: licence, author, source package + version,
                                      path in the package, split, size, sha256
    splits.json                       {"train": [ids], "eval": [ids]}
    train_crops/<S>/<id>_<k>.png      S x S RGB crops of the training photos (+ params.json)
    eval/512/<id>.png, eval/<E>/<id>.png
                                      held-out photos, centre square crop resized to 512 / E

Usage::

    python scripts/fetch_photos.py --out data/photos --crop-size 256 --crops-per-image 200 --seed 0

Re-running is cheap: originals, crops and eval images that already exist are not redone, and
a crop's content depends only on (seed, photo id, crop index, --max-short-side), so asking for
more crops later adds new ones and keeps the old ones identical.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import math
import pickle
import posixpath
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from asuka.errors import InputError

# The wallpapers are up to 5640 x 3172; PIL's decompression-bomb guard starts at ~89 MP.
Image.MAX_IMAGE_PIXELS = 200_000_000

DEBIAN_PACKAGES = ("mate-backgrounds", "plasma-workspace-wallpapers", "jigzo-data", "lxqt-themes", "kphotoalbum",
                   "gcompris-qt-data", "sddm-theme-maldives", "kodi-data", "digikam-data")
#: Package name prefixes never downloaded nor unpacked: their photos are the independent test set.
FORBIDDEN_PACKAGES = ("lomiri-wallpapers",)
#: Packages looked at (every image file, and the copyright file) that hold no photograph.
PACKAGES_WITHOUT_PHOTOS: dict[str, str] = {
    "gnome-backgrounds": "43.1: abstract renders (adwaita, blobs, drool, dune, field, grid, licorice, "
                         "oceans, pixels, symbolic, truchet, vnc, wood), SVG or WebP; no photograph",
    "ukui-wallpapers": "20.04.3: 12 digital illustrations (ribbons, flat shapes, a fish, a mouse, "
                       "a robot head); no photograph",
    "sway-backgrounds": "1.7: the sway logo on a blue gradient, 8 sizes; no photograph",
    "tuxpaint-stamps-default": "2022.06.04-1: 796 cut-out stamps and clip-art on transparency; no full photograph",
    "desktop-base": "12.0.6: Debian's theme renders; no photograph",
}
#: Packages with photographs that are not used, and why.
PACKAGES_NOT_USED: dict[str, str] = {
    "tuxtype-data": "1.8.3: 12 landscape photos (images/kcas*.jpg), but its README says only 'featured images "
                    "from Wikimedia Commons' and debian/copyright describes public-domain NOAA/FWS images: "
                    "no author or licence per photo",
    "stellarium-data": "0.22.2: landscape panoramas with the sky cut out, telescope images, mostly without a "
                       "stated licence; one full scene (Sterngarten) only",
    "opencv-doc": "4.6.0: classic test images (USC-SIPI, Oxford VGG, ICDAR) whose original licences are unknown",
}
#: Kept photos whose fraction of exactly flat neighbouring pixels is above this get a warning:
#: renders and flat illustrations score 0.4-1.0, the kept photographs 0.0-0.46 (JPEG sky, fog).
FLAT_WARNING = 0.5
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: Files that hold a photograph inside (jigzo's puzzles), looked at like image files.
CONTAINER_SUFFIXES = (".pzl",)
EVAL_FULL_SIZE = 512
MATE_DIR = "usr/share/backgrounds/mate"
PLASMA_DIR = "usr/share/wallpapers"
JIGZO_DIR = "usr/share/games/jigzo/puzzles/00_default"
LXQT_DIR = "usr/share/lxqt/wallpapers"
KPA_DIR = "usr/share/kphotoalbum/demo"
GCOMPRIS_RCC = "usr/share/gcompris-qt/rcc"
#: In a locator, separates a container file of the package from a file inside it.
INNER = "!/"
#: Packages in which only the folders of the kept photos are looked through for images listed
#: neither as kept nor as rejected (their other folders are program data: icons, sprites, themes).
PHOTO_FOLDERS_ONLY = ("lxqt-themes", "kphotoalbum", "gcompris-qt-data", "sddm-theme-maldives", "kodi-data",
                      "digikam-data")


@dataclass(frozen=True)
class Photo:
    """One kept photograph.

    ``source`` is ``"debian"``, ``"skimage"``, ``"sklearn"``, ``"matplotlib"`` or ``"scipy"``.
    ``locator`` is, for Debian, a path inside the unpacked package -- an image file, a jigzo
    ``.pzl`` puzzle, or a Plasma wallpaper folder whose largest ``contents/images/WxH.*`` is
    used, or ``<container>!/<path inside it>`` for a photo inside a Qt resource file --; for scikit-image the ``skimage.data`` function name; for scikit-learn the
    ``load_sample_image`` file name; for matplotlib a file of its ``mpl-data/sample_data``; for
    SciPy the name of a ``scipy/misc/<name>.dat`` (``face``, ``ascent``). ``split`` is ``"train"``
    or ``"eval"``.
    """

    id: str
    source: str
    package: str
    locator: str
    licence: str
    author: str
    content: str
    split: str = "train"
    notes: str = ""


def _mate(name: str, author: str, content: str, split: str = "train") -> Photo:
    return Photo(
        id=f"mate-{name}",
        source="debian",
        package="mate-backgrounds",
        locator=f"{MATE_DIR}/nature/{name}.jpg",
        licence="GPL-2+",
        author=author,
        content=content,
        split=split,
    )


def _plasma(name: str, author: str, content: str, split: str = "train") -> Photo:
    return Photo(
        id=f"plasma-{name}",
        source="debian",
        package="plasma-workspace-wallpapers",
        locator=f"{PLASMA_DIR}/{name}",
        # The wallpaper's own metadata.json says LGPLv3; debian/copyright covers the whole
        # package ("Files: *") with GPL-2+. Both are recorded; both allow redistribution.
        licence="LGPL-3.0 (wallpaper metadata.json); package: GPL-2+ (debian/copyright)",
        author=author,
        content=content,
        split=split,
    )


def _jigzo(name: str, content: str, split: str = "train", *, author: str = "Maarten de Boer",
           licence: str = "GPL-2+") -> Photo:
    return Photo(
        id=f"jigzo-{name.split('-')[0]}",
        source="debian",
        package="jigzo-data",
        locator=f"{JIGZO_DIR}/{name}.pzl",
        # debian/copyright: "Files: *" (the game and its puzzles) Maarten de Boer, GPL-2+;
        # separate stanzas for the puzzles by other authors.
        licence=licence,
        author=author,
        content=content,
        split=split,
        notes="read from the puzzle's texture atlas (its 'image' rectangle), saved as PNG",
    )


def _lxqt(file: str, content: str, author: str = "stefonarch (standreas@riseup.net)",
          split: str = "train") -> Photo:
    return Photo(
        id=f"lxqt-{Path(file).stem}",
        source="debian",
        package="lxqt-themes",
        locator=f"{LXQT_DIR}/{file}",
        # wallpapers/License: "Licensed under CC-BY-SA-3.0", credits per file; debian/copyright
        # covers the package ("Files: *") with LGPL-2.1+. Both are recorded.
        licence="CC-BY-SA-3.0 (wallpapers/License); package: LGPL-2.1+ (debian/copyright)",
        author=author,
        content=content,
        split=split,
    )


def _kpa(name: str, content: str, split: str = "train") -> Photo:
    return Photo(
        id=f"kpa-{name}",
        source="debian",
        package="kphotoalbum",
        locator=f"{KPA_DIR}/{name}.jpg",
        licence="GPL-2+ (debian/copyright, the whole package)",
        author="Jesper K. Pedersen (KPhotoAlbum's author; the demo album is his)",
        content=content,
        split=split,
    )


def _gcompris(activity: str, folder: str, names: str, content: str, short: str,
              eval_names: tuple[str, ...] = ()) -> tuple[Photo, ...]:
    """One Photo per ``<name>.webp`` of ``resource/<folder>`` in ``<activity>.rcc``."""
    inner = f"gcompris/src/activities/{activity}/resource" + (f"/{folder}" if folder else "")
    return tuple(
        Photo(
            id=f"gcompris-{short}-{name}",
            source="debian",
            package="gcompris-qt-data",
            locator=f"{GCOMPRIS_RCC}/{activity}.rcc{INNER}{inner}/{name}.webp",
            # debian/copyright's "Files: *" (GPL-3+) predates these files; each activity's README
            # in the resource file names the photo's author, source and licence (added to the
            # record when fetched: gcompris_attribution)
            licence="GPL-3+ (debian/copyright, Files: *)",
            author="from the activity's README (Wikimedia Commons photographers, GCompris contributors)",
            content=f"{name.replace('_', ' ')} ({content})",
            split="eval" if name in eval_names else "train",
            notes="WebP inside the activity's Qt resource file, saved as PNG; the author and licence of the "
                  "activity's README are added when fetched",
        )
        for name in names.split()
    )


# Kept photographs. Authors/licences: MATE from debian/copyright (one "Files:" stanza per
# photo); Plasma from each wallpaper's metadata.json ("KPlugin.Authors", "KPlugin.License");
# scikit-image from the docstring of each skimage.data function; scikit-learn from
# sklearn/datasets/images/README.txt.
CATALOGUE: tuple[Photo, ...] = (
    # -- mate-backgrounds, nature/ (all twelve are photographs; the other folders are not) --
    _mate("Aqua", "Charles Barbin (2008)", "macro of a water drop splash"),
    _mate("Blinds", "Lennart Poettering, Andrea Cimitan (2008)", "backlit green leaf, veins"),
    _mate("Dune", "Marco Cogoni (2007), Hylke Bons (2008)", "dune grass, sea, sky", "eval"),
    _mate("FreshFlower", "Jens Ansorg (2005)", "orange flower petals, macro"),
    _mate("Garden", "Charles Barbin (2008)", "red marigold, blurred garden"),
    _mate("GreenMeadow", "Timothy Schellhase (2005), Lapo Calamandrei (2008)", "grass blades"),
    _mate("LadyBird", "Charles Barbin (2008)", "ladybird on a stem, forget-me-nots", "eval"),
    _mate("RainDrops", '"blackcombwhistler07" (2008)', "rain drops on leaves", "eval"),
    _mate("Storm", "Sergey Nazarov (2008)", "storm clouds over a road, motion blur"),
    _mate("TwoWings", "Charles Barbin, Hylke Bons (2008)", "dandelion seeds, orange bokeh"),
    _mate("Wood", "Jean-François Fortin Tam (2008)", "weathered wooden planks, shallow focus"),
    _mate("YellowFlower", "Charles Barbin (2008)", "yellow flower, dark background"),
    # -- plasma-workspace-wallpapers (photographs only; the rest are renders/illustrations) --
    _plasma("BytheWater", "Maciej Wiklo", "wooden jetty, lake, trees"),
    _plasma("ColdRipple", "Risto Saukonpää", "black-and-white pier in fog"),
    _plasma("ColorfulCups", "Dmitri Popov", "stacked plastic cups from above"),
    _plasma("DarkestHour", "Risto Saukonpää", "lake and islands at blue hour"),
    _plasma("EveningGlow", "Ian Hex", "rowing boats on a lake shore at sunset", "eval"),
    _plasma("FallenLeaf", "Martin Klapetek", "autumn leaves on the ground, bokeh"),
    _plasma("Grey", "Sigi Sagi", "greyscale building facade, curved bands"),
    _plasma("Kite", "Risto Saukonpää", "kite in a blue sky with clouds"),
    _plasma("OneStandsOut", "Risto Saukonpää", "moss / young conifers from above"),
    _plasma("Path", "Risto Saukonpää", "path through a spruce forest", "eval"),
    _plasma("summer_1am", "Risto Saukonpää", "lake at dusk, reeds"),
    # -- scikit-image 0.2x, skimage.data --
    Photo("skimage-astronaut", "skimage", "scikit-image", "astronaut",
          "Public domain (NASA)", "NASA (photograph of Eileen Collins)",
          "portrait, flag, shuttle model", "eval"),
    Photo("skimage-coffee", "skimage", "scikit-image", "coffee",
          "CC0", "Rachel Michetti (courtesy of Pikolo Espresso Bar)",
          "coffee cup on a wooden table"),
    Photo("skimage-chelsea", "skimage", "scikit-image", "chelsea",
          "CC0", "Stefan van der Walt", "cat face"),
    Photo("skimage-camera", "skimage", "scikit-image", "camera",
          "CC0", "Lav Varshney", "man with a camera on a tripod, grey",
          notes="greyscale; stored as RGB with three equal channels"),
    Photo("skimage-rocket", "skimage", "scikit-image", "rocket",
          "Public domain (released by SpaceX, per skimage.data.rocket)", "SpaceX",
          "Falcon 9 on the pad at dusk"),
    Photo("skimage-coins", "skimage", "scikit-image", "coins",
          "No known copyright restrictions (Brooklyn Museum)", "Brooklyn Museum collection",
          "Greek coins from Pompeii, grey",
          notes="greyscale; stored as RGB with three equal channels"),
    Photo("skimage-brick", "skimage", "scikit-image", "brick",
          "CC0 (CC0Textures, Bricks25)", "CC0Textures", "brick wall, grey",
          notes="greyscale, perspective-corrected; stored as RGB with three equal channels"),
    Photo("skimage-grass", "skimage", "scikit-image", "grass",
          "CC0 (DeviantArt, linolafett)", "linolafett", "grass, grey",
          notes="greyscale; stored as RGB with three equal channels"),
    Photo("skimage-gravel", "skimage", "scikit-image", "gravel",
          "CC0 (CC0Textures, Gravel04)", "CC0Textures", "gravel, grey",
          notes="greyscale; stored as RGB with three equal channels"),
    Photo("skimage-retina", "skimage", "scikit-image", "retina",
          "CC0 (Wikimedia Commons)", "Mikael Häggström", "fundus photograph of a retina on black"),
    Photo("skimage-immunohistochemistry", "skimage", "scikit-image", "immunohistochemistry",
          "No known copyright restrictions (per skimage.data)", "Center for Microscopy And Molecular Imaging",
          "stained colonic glands, microscope"),
    Photo("skimage-hubble", "skimage", "scikit-image", "hubble_deep_field",
          "Public domain (NASA)", "NASA / Hubble", "Hubble eXtreme Deep Field, galaxies on black"),
    # -- scikit-learn, sklearn.datasets.load_sample_image --
    Photo("sklearn-china", "sklearn", "scikit-learn", "china.jpg",
          "CC-BY-2.0", "danielbuechele (Flickr)", "pagoda, trees, lake", "eval",
          notes="427 px tall: the 512 eval copy is upscaled x1.2"),
    Photo("sklearn-flower", "sklearn", "scikit-learn", "flower.jpg",
          "CC-BY-2.0", "vultilion (Flickr)", "dahlia, dark green background",
          notes="sklearn's README credits 'danielbuechele' but links vultilion's photo page"),
    # -- matplotlib, mpl-data/sample_data --
    Photo("mpl-grace_hopper", "matplotlib", "matplotlib", "grace_hopper.jpg",
          "Public domain (U.S. Navy photograph)", "U.S. Navy (portrait of Grace Hopper)",
          "portrait in uniform, flag", "eval"),
    # -- jigzo-data, the puzzles of the jigsaw game (photographs, 482-782 px) --
    _jigzo("bike-3x4", "pink child's bicycle on a pavement"),
    _jigzo("bird-2x3", "kookaburra on a branch, leaves"),
    _jigzo("blackberry-3x3", "blackberries among leaves"),
    _jigzo("castle-6x3", "castle walls above trees, sky"),
    _jigzo("clouds-4x4", "bare branches against clouds and blue sky"),
    _jigzo("gorilla2-3x3", "gorilla walking on grass", "eval"),
    _jigzo("heli-4x3", "helicopter over the sea, sailing boat", author="Joana Clotet", licence="GPL-2"),
    _jigzo("horse-4x3", "horse's head with bridle"),
    _jigzo("tobogan-4x3", "playground slide tower among trees"),
    _jigzo("train-2x2", "miniature steam locomotive, garden"),
    _jigzo("windmill-4x4", "windmill against a blue sky", "eval"),
    # -- SciPy, scipy/misc/*.dat (bundled until SciPy 1.11; docstrings of scipy.misc.face/ascent) --
    Photo("scipy-face", "scipy", "scipy", "face",
          "Public domain (public-domain-image.com, raccoon-procyon-lotor.jpg)", "public-domain-image.com",
          "raccoon among palm leaves", "eval"),
    Photo("scipy-ascent", "scipy", "scipy", "ascent",
          "Public domain (public-domain-image.com, accent-to-the-top.jpg)", "public-domain-image.com",
          "people climbing an observation tower's stairs, grey",
          notes="greyscale; stored as RGB with three equal channels"),
    # -- lxqt-themes 1.2, wallpapers/ (the photographs; the rest are renders and logos) --
    _lxqt("flowers.png", "wild flowers in a meadow, shallow focus"),
    _lxqt("fog.jpg", "fog over a field and a hillside"),
    _lxqt("after-the-rain.jpg", "sunset clouds over a dark ridge"),
    _lxqt("beam.png", "sun rays through storm clouds over wooded hills"),
    _lxqt("appleflower.png", "apple blossom twig, green bokeh"),
    _lxqt("drop.png", "water drop on a grass blade"),
    _lxqt("this-is-not-windows.jpg", "green hills under a blue sky"),
    _lxqt("butterfly.png", "swallowtail on a thistle, dark background"),
    _lxqt("cloud.png", "altocumulus clouds in a blue sky",
          author="not named in wallpapers/License (LXQt Project Team, 2022)"),
    _lxqt("Butterfly-Kenneth-Wimer.jpg", "butterfly on a plant, pale bokeh",
          author="Kenneth Wimer (file name; not named in wallpapers/License)"),
    _lxqt("Valendas.png", "mountain ridges under clouds",
          author="not named in wallpapers/License (LXQt Project Team, 2022)", split="eval"),
    # -- kphotoalbum 5.9, demo/ (the demo album; 4 more are stored rotated, see REJECTED) --
    _kpa("anne_helene", "woman sitting on a beach"),
    _kpa("bar55", "people in a bar at night, flash"),
    _kpa("bar55_2", "couple with glasses in a bar, flash"),
    _kpa("blackie", "food behind a glass counter"),
    _kpa("cold_water", "people at the edge of the sea"),
    _kpa("donna", "black dog in a winter forest"),
    _kpa("donna_2", "black dog indoors, flash"),
    _kpa("grand_canyon_2", "man at the Grand Canyon at dusk"),
    _kpa("grand_canyon_3", "the Grand Canyon at dusk"),
    _kpa("jesper", "face close-up"),
    _kpa("jesper_2", "man indoors, flash"),
    _kpa("new_wave_2", "young man smiling in a room"),
    _kpa("pool", "pool hall, players"),
    _kpa("qt-logo", "three men showing tattoos"),
    _kpa("skagen", "waves of a grey sea"),
    _kpa("skagen_2", "coast and sea from a plane", split="eval"),
    _kpa("snow", "airport apron in snow"),
    _kpa("spiff", "rabbit on a lawn"),
    _kpa("spiff_2", "rabbit in a cardboard box"),
    _kpa("sunset", "red sunset over a dark horizon"),
    # -- gcompris-qt-data 3.1, inside the activities' Qt resource files --
    *_gcompris("erase", "", "alpaca bee butterfly calf camels caterpillar chamaeleon cheetah crab dolphin "
               "flying_fox gibbon giraffe goat gorilla gosling heron horse kingfisher kitten long_nosed_monkey "
               "macaque meerkats northern_harrier nubian_ibex penguin pika red_panda rhinoceros spoonbills "
               "squirrel swans toucan", "animal photograph, 1920 x 1080", "erase", eval_names=("cheetah",)),
    *_gcompris("explore_world_animals", "animals", "bison chameleon crocodile dragon giraffe hedgehog jaguar "
               "kangaroo koala lemur moose narwhal panda polar_bear scarlet_macaw", "animal photograph", "world"),
    *_gcompris("explore_farm_animals", "animals", "cat chicken cow dog duck horse owl pig sheep",
               "farm animal photograph", "farm"),
    *_gcompris("explore_monuments", "wonders", "chichenItza christTheRedeemer colosseum greatWallofChina "
               "machuPicchu petra tajMahal", "monument photograph", "monument"),
    *_gcompris("explore_monuments", "usa", "canyondeChelly castillodeSanMarcos castleClinton fortSumter "
               "georgeWashingtonBirthplace lincolnMemorial mountRushmore navajo statueofLiberty",
               "monument photograph", "monument"),
    *_gcompris("explore_monuments", "india", "ajantaCave charminar gatewayofIndia goldenTemple greatStupa "
               "hawaMahal konarkSunTemple mysorePalace qutubMinar rangGhar victoriaMemorial",
               "monument photograph", "monument"),
    *_gcompris("explore_monuments", "egypt", "bentPyramid greatPyramidOfGiza meidumPyramid redPyramid",
               "monument photograph", "monument"),
    *_gcompris("explore_monuments", "france", "arlesAmphitheater chateaudeChambord chateaudeChenonceau "
               "citedeCarcassonne eiffelTower montStMichel palaisdesPapes pontduGard reimsCathedral rocamadour",
               "monument photograph", "monument", eval_names=("montStMichel",)),
    *_gcompris("explore_monuments", "germany", "aulaPalatina berlinCathedral brandenburgGate "
               "neuschwansteinCastle schwerinPalace trierImperialBaths wormsCathedral",
               "monument photograph", "monument"),
    *_gcompris("clickgame", "", "sea1 sea2 sea3 sea4 sea5 sea6", "underwater scene, background of the fish game",
               "sea", eval_names=("sea2",)),
    # -- one or two photographs each --
    Photo("sddm-maldives", "debian", "sddm-theme-maldives", "usr/share/sddm/themes/maldives/background.jpg",
          "CC-BY-3.0 (debian/copyright, Files: data/themes/maldives/background.jpg)",
          "Nevit Dilmen (2008, commons.wikimedia.org/wiki/User:Nevit)", "wooden jetty to a beach, palm tree"),
    Photo("kodi-movie", "debian", "kodi-data", "usr/share/kodi/addons/skin.estuary/extras/home-images/movie.jpg",
          "CC0-1.0 (debian/copyright)", "unknown (debian/copyright: 'Copyright: UNKNOWN', CC0 grant)",
          "home-screen photo of the Estuary skin"),
    Photo("kodi-music", "debian", "kodi-data", "usr/share/kodi/addons/skin.estuary/extras/home-images/music.jpg",
          "CC0-1.0 (debian/copyright)", "unknown (debian/copyright: 'Copyright: UNKNOWN', CC0 grant)",
          "home-screen photo of the Estuary skin"),
    Photo("digikam-lake", "debian", "digikam-data", "usr/share/digikam/about/images/body-background.jpg",
          "GPL-2+ (debian/copyright, the whole package)", "digiKam developers (debian/copyright)",
          "lake and a hill, background of digiKam's about page"),
)

# Everything in the packages that is *not* kept, and why. Used to notice package updates
# (an image file listed in neither table is reported) and documented in data/README.md.
REJECTED: dict[str, str] = {
    f"{MATE_DIR}/abstract/Elephants.jpg": "painting (Wyng Stancikaite)",
    f"{MATE_DIR}/abstract/Elephants_3840x2160.jpg": "painting (Wyng Stancikaite)",
    f"{MATE_DIR}/abstract/Elephants_5640x3172.jpg": "painting (Wyng Stancikaite)",
    f"{MATE_DIR}/abstract/Arc-Colors-Transparent-Wallpaper.png": "flat vector shapes",
    f"{MATE_DIR}/abstract/Flow.png": "vector ornament on flat colour",
    f"{MATE_DIR}/abstract/Gulp.png": "flat gradient with a brush edge",
    f"{MATE_DIR}/abstract/Silk.png": "abstract graphic, mostly transparent",
    f"{MATE_DIR}/abstract/Spring.png": "abstract graphic, mostly transparent",
    f"{MATE_DIR}/abstract/Waves.png": "abstract graphic, mostly transparent",
    f"{MATE_DIR}/desktop/Float-into-MATE.png": "graphic with MATE logos",
    f"{MATE_DIR}/desktop/GreenTraditional.jpg": "MATE logo on a gradient",
    f"{MATE_DIR}/desktop/MATE-Stripes-Dark.png": "stripe pattern",
    f"{MATE_DIR}/desktop/MATE-Stripes-Light.png": "stripe pattern",
    f"{MATE_DIR}/desktop/Stripes.png": "stripe pattern",
    f"{MATE_DIR}/desktop/Ubuntu-Mate-Cold-no-logo.png": "digital 'aurora' art (blobs + dot stars)",
    f"{MATE_DIR}/desktop/Ubuntu-Mate-Dark-no-logo.png": "digital 'aurora' art (blobs + dot stars)",
    f"{MATE_DIR}/desktop/Ubuntu-Mate-Radioactive-no-logo.png": "digital 'aurora' art",
    f"{MATE_DIR}/desktop/Ubuntu-Mate-Warm-no-logo.png": "digital 'aurora' art",
    **{
        f"{PLASMA_DIR}/{name}": why
        for name, why in {
            "Altai": "low-poly render",
            "Autumn": "painting (girl under a tree)",
            "Canopee": "low-poly render",
            "Cascade": "low-poly render",
            "Cluster": "render (hexagons, nebula)",
            "Elarun": "abstract gradient",
            "Flow": "hexagon-grid render",
            "FlyingKonqui": "cartoon mascot",
            "Honeywave": "render",
            "IceCold": "low-poly render",
            "Kay": "geometric render",
            "Kokkini": "abstract render",
            "MilkyWay": "abstract render",
            "Opal": "abstract render",
            "PastelHills": "low-poly render",
            "Patak": "render",
            "SafeLanding": "illustration (rocket, hills)",
            "Shell": "low-poly render",
            "Volna": "low-poly render",
        }.items()
    },
    # scikit-image images that are not used (all the photographs with a licence note are kept)
    "skimage:brick": "512 px grey texture swatch, perspective-warped (CC0)",
    "skimage:grass": "512 px grey texture swatch (CC0)",
    "skimage:gravel": "512 px grey texture swatch (CC0)",
    "skimage:moon": "no licence statement in skimage",
    "skimage:stereo_motorcycle": "Middlebury stereo image; no licence statement in skimage",
    "skimage:clock": "deliberately motion-blurred test image",
    "skimage:hubble_deep_field": "astronomical image, mostly black, out of domain",
    "skimage:retina": "medical fundus image, out of domain",
    "skimage:immunohistochemistry": "microscopy, out of domain",
    "skimage:cell": "quantitative phase image, out of domain",
    "skimage:microaneurysms": "retina detail, out of domain",
    "skimage:page / text / horse / logo / colorwheel / chessboard / binary_blobs":
        "not photographs",
    f"{JIGZO_DIR}/penguin-3x2.pzl": "photograph under CC-BY-NC-SA-1.0 (non-commercial: not free)",
    "usr/share/games/jigzo/image": "the game's icons (arrow, folder, leave)",
    "usr/share/games/jigzo/font": "the game's bitmap font",
    "scipy:ecg": "an electrocardiogram signal, not an image",
    **{f"{LXQT_DIR}/{name}": "render or logo graphic" for name in (
        "kde-plasma.png", "lxqt-origami-green.png", "origami-bright-logo.png", "origami-dark.png",
        "origami-light.png", "plasma-logo-bright.png", "plasma-logo-dark.png", "plasma_arch.png",
        "simple_blue_widescreen.png", "triangles-logo.png", "triangles.png", "waves-logo.png",
        "waves-purple-logo.jpg")},
    **{f"{KPA_DIR}/{name}.jpg": f"stored rotated by {angle} degrees (demo/index.xml angle=)"
       for name, angle in (("new_wave_1", 90), ("grand_canyon_1", 180), ("wayne", 90), ("pool_2", 270))},
    "usr/share/sddm/themes/maldives/maldives.jpg": "the theme's screenshot (login box over the photo)",
    "usr/share/sddm/themes/maldives/angle-down.png": "icon",
    "usr/share/sddm/themes/maldives/rectangle.png": "flat graphic",
    "usr/share/digikam/about/images/top-left-digikam.png": "logo",
    f"{GCOMPRIS_RCC}/*.rcc": "the other images of GCompris's activities: drawings, cut-outs, paintings, "
                             "photos under 400 px",
}

CommandRunner = Callable[..., subprocess.CompletedProcess]


# --------------------------------------------------------------------------- catalogue checks


def check_catalogue(catalogue: Sequence[Photo]) -> None:
    """Raise InputError if ids repeat, a split is unknown, or a licence/author is missing."""
    seen: set[str] = set()
    for p in catalogue:
        if p.id in seen:
            raise InputError(f"photo id {p.id!r} appears twice in the catalogue; ids must be unique")
        seen.add(p.id)
        if p.split not in ("train", "eval"):
            raise InputError(f"photo {p.id!r}: split must be 'train' or 'eval', got {p.split!r}")
        if p.source not in ("debian", "skimage", "sklearn", "matplotlib", "scipy"):
            raise InputError(f"photo {p.id!r}: unknown source {p.source!r}")
        check_allowed_package(p.package)
        if not p.licence or not p.author:
            raise InputError(f"photo {p.id!r}: licence and author are required")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", p.id):
            raise InputError(f"photo id {p.id!r} must be a plain file name ([A-Za-z0-9_.-])")


def check_allowed_package(package: str) -> None:
    """InputError for the packages reserved for independent testing (:data:`FORBIDDEN_PACKAGES`)."""
    for prefix in FORBIDDEN_PACKAGES:
        if package.startswith(prefix):
            raise InputError(f"package {package!r} is reserved for independent testing of the models "
                             f"trained on this data and must never be used here")


def flat_fraction(img: Image.Image, side: int = 1024) -> float:
    """Fraction of horizontally neighbouring pixel pairs that are exactly equal (after a bilinear
    downscale to at most ``side`` px): high for renders and flat illustrations, low for photos."""
    img = img.convert("RGB")
    img.thumbnail((side, side), Image.BILINEAR)
    a = np.asarray(img).astype(np.int16)
    return float((np.abs(np.diff(a, axis=1)).max(-1) == 0).mean())


def split_ids(catalogue: Sequence[Photo]) -> dict[str, list[str]]:
    """``{"train": [...], "eval": [...]}`` in catalogue order (the split is the explicit list)."""
    return {s: [p.id for p in catalogue if p.split == s] for s in ("train", "eval")}


# --------------------------------------------------------------------------- fetching


def _run(run: CommandRunner, cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run(cmd, cwd=cwd, capture_output=True, text=True)


def download_debs(packages: Iterable[str], dest: Path, *, run: CommandRunner = subprocess.run) -> dict[str, Path]:
    """``apt-get download`` each package into ``dest``; run ``apt-get update`` once on failure.

    Returns ``{package: path_to_deb}``. Raises InputError with apt's message if it still fails.
    """
    dest.mkdir(parents=True, exist_ok=True)
    packages = list(packages)
    for pkg in packages:
        check_allowed_package(pkg)
    result = _run(run, ["apt-get", "download", *packages], cwd=dest)
    if result.returncode != 0:
        print("apt-get download failed; running apt-get update and retrying", flush=True)
        upd = _run(run, ["apt-get", "update"])
        if upd.returncode != 0:
            raise InputError(f"apt-get update failed (exit {upd.returncode}): {upd.stderr.strip()[-500:]}")
        result = _run(run, ["apt-get", "download", *packages], cwd=dest)
        if result.returncode != 0:
            raise InputError(
                f"apt-get download {' '.join(packages)} failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-500:]}"
            )
    return find_debs(packages, dest)


def find_debs(packages: Iterable[str], folder: Path) -> dict[str, Path]:
    """``{package: newest <package>_*.deb in folder}``; InputError naming any that is missing."""
    found, missing = {}, []
    for pkg in packages:
        check_allowed_package(pkg)
        debs = sorted(folder.glob(f"{pkg}_*.deb"))
        if debs:
            found[pkg] = debs[-1]
        else:
            missing.append(pkg)
    if missing:
        raise InputError(f"no .deb for {missing} in {folder} (expected files named <package>_<version>_all.deb)")
    return found


def unpack_deb(deb: Path, dest: Path, *, run: CommandRunner = subprocess.run) -> str:
    """``dpkg -x deb dest``; returns the package version (from ``dpkg-deb -f deb Version``)."""
    dest.mkdir(parents=True, exist_ok=True)
    res = _run(run, ["dpkg", "-x", str(deb), str(dest)])
    if res.returncode != 0:
        raise InputError(f"dpkg -x {deb} failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
    ver = _run(run, ["dpkg-deb", "-f", str(deb), "Version"])
    return ver.stdout.strip() if ver.returncode == 0 else "unknown"


_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def largest_variant(wallpaper_dir: Path) -> Path:
    """The largest ``contents/images/WxH.{jpg,png}`` of a Plasma wallpaper (by pixel count)."""
    best, best_area = None, -1
    for f in sorted((wallpaper_dir / "contents" / "images").glob("*")):
        m = _SIZE_RE.match(f.stem)
        if m and f.suffix.lower() in IMAGE_SUFFIXES:
            area = int(m.group(1)) * int(m.group(2))
            if area > best_area:
                best, best_area = f, area
    if best is None:
        raise InputError(f"wallpaper folder {wallpaper_dir} has no contents/images/<W>x<H>.jpg|png")
    return best


def resolve_debian_file(root: Path, photo: Photo) -> Path:
    """The file a Debian catalogue entry points to inside the unpacked package ``root``."""
    target = root / photo.locator
    if target.is_dir():
        return largest_variant(target)
    if not target.is_file():
        raise InputError(
            f"photo {photo.id!r}: {photo.locator} is not in package {photo.package} "
            f"(unpacked at {root}); the package layout changed -- update CATALOGUE"
        )
    return target


def unlisted_images(root: Path, catalogue: Sequence[Photo], rejected: dict[str, str]) -> list[str]:
    """Image files in an unpacked package covered neither by the catalogue nor by REJECTED (in a
    :data:`PHOTO_FOLDERS_ONLY` package, only in the folders of its kept photos)."""
    listed = {p.locator for p in catalogue if p.source == "debian"} | set(rejected)
    folders = sorted({(root / p.locator.split(INNER)[0]).parent for p in catalogue
                      if p.source == "debian" and p.package in PHOTO_FOLDERS_ONLY})
    files = [f for d in folders for f in d.glob("*")] if folders else root.rglob("*")
    out = []
    for f in sorted(files):
        if f.suffix.lower() not in IMAGE_SUFFIXES + CONTAINER_SUFFIXES or not f.is_file():
            continue
        rel = f.relative_to(root).as_posix()
        if rel.endswith("/contents/screenshot.png") or rel.endswith("/contents/screenshot.jpg"):
            continue
        if not any(rel == x or rel.startswith(x + "/") for x in listed):
            out.append(rel)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _original_path(out: Path, photo_id: str) -> Path | None:
    hits = sorted((out / "originals").glob(f"{photo_id}.*"))
    return hits[0] if hits else None


def fetch_originals(
    out: Path,
    catalogue: Sequence[Photo],
    *,
    deb_dir: Path | None = None,
    rejected: dict[str, str] = REJECTED,
    run: CommandRunner = subprocess.run,
) -> list[dict]:
    """Put every catalogue photo under ``out/originals`` and return its licence records.

    Skips the apt download when every Debian original is already there (``LICENSES.json``
    then supplies their records). ``deb_dir``: use ``<package>_*.deb`` files found there
    instead of downloading. Copies the packages' copyright files into ``out/licenses``.
    """
    originals, licenses = out / "originals", out / "licenses"
    originals.mkdir(parents=True, exist_ok=True)
    licenses.mkdir(parents=True, exist_ok=True)
    previous = {}
    if (out / "LICENSES.json").is_file():
        previous = {r["id"]: r for r in json.loads((out / "LICENSES.json").read_text())["photos"]}

    records: dict[str, dict] = {}
    debian = [p for p in catalogue if p.source == "debian"]
    need = sorted({p.package for p in debian if _original_path(out, p.id) is None or p.id not in previous})
    if need:
        with tempfile.TemporaryDirectory(prefix="asuka-photos-") as tmp:
            tmp = Path(tmp)
            debs = find_debs(need, deb_dir) if deb_dir else download_debs(need, tmp / "debs", run=run)
            for pkg, deb in debs.items():
                root = tmp / "x" / pkg
                version = unpack_deb(deb, root, run=run)
                print(f"unpacked {deb.name} (version {version})", flush=True)
                copyright_file = root / "usr/share/doc" / pkg / "copyright"
                if copyright_file.is_file():
                    shutil.copyfile(copyright_file, licenses / f"{pkg}.copyright")
                for rel in unlisted_images(root, [p for p in catalogue if p.package == pkg], rejected):
                    print(f"  note: {pkg} ships {rel}, listed neither as kept nor rejected", flush=True)
                containers: dict[str, dict[str, bytes]] = {}  # each resource file read once
                for p in (p for p in debian if p.package == pkg):
                    if INNER in p.locator:  # a photo inside a Qt resource file: as PNG, with its README's terms
                        dst = originals / f"{p.id}.png"
                        upstream = qt_resource_photo(root, p, containers, dst)
                        records[p.id] = _with_upstream(_record(p, dst, f"{pkg} {version}", p.locator), upstream)
                        continue
                    src = resolve_debian_file(root, p)
                    if src.suffix.lower() == ".pzl":  # a jigzo puzzle: the photo inside, as PNG
                        dst = originals / f"{p.id}.png"
                        pzl_photo(src).save(dst)
                    else:
                        dst = originals / f"{p.id}{src.suffix.lower()}"
                        shutil.copyfile(src, dst)
                    meta = root / p.locator / "metadata.json"
                    if meta.is_file():  # a Plasma wallpaper: its own licence statement
                        shutil.copyfile(meta, licenses / f"{p.id}.metadata.json")
                    records[p.id] = _record(p, dst, f"{pkg} {version}", src.relative_to(root).as_posix())
    for p in debian:
        if p.id not in records:
            records[p.id] = previous[p.id]

    for p in catalogue:
        if p.source == "debian":
            continue
        dst = originals / f"{p.id}.png"
        if p.source == "matplotlib":
            dst = originals / f"{p.id}{Path(p.locator).suffix.lower()}"
            if dst.is_file() and p.id in previous:  # no second pip download
                records[p.id] = previous[p.id]
                continue
            where, in_pkg = fetch_matplotlib_sample(p.locator, dst, licenses, run=run)
        elif p.source == "scipy":
            if dst.is_file() and p.id in previous:  # no second pip download
                records[p.id] = previous[p.id]
                continue
            where, in_pkg = fetch_scipy_sample(p.locator, dst, licenses, run=run)
        elif p.source == "skimage":
            import skimage
            import skimage.data

            where = f"scikit-image {skimage.__version__}"
            in_pkg = f"skimage.data.{p.locator}()"
            if not dst.is_file():
                Image.fromarray(np.asarray(getattr(skimage.data, p.locator)())).save(dst)
            _copy_dist_licence("scikit_image", licenses / "scikit-image.LICENSE.txt")
        else:
            import sklearn
            from sklearn.datasets import load_sample_image

            where = f"scikit-learn {sklearn.__version__}"
            in_pkg = f"sklearn.datasets.load_sample_image({p.locator!r})"
            if not dst.is_file():
                Image.fromarray(load_sample_image(p.locator)).save(dst)
            readme = Path(sklearn.__file__).parent / "datasets" / "images" / "README.txt"
            if readme.is_file():
                shutil.copyfile(readme, licenses / "scikit-learn.images-README.txt")
        records[p.id] = _record(p, dst, where, in_pkg)
    return [records[p.id] for p in catalogue]


def qt_resource_files(data: bytes, name: str = "resource file") -> dict[str, bytes]:
    """Every file of a Qt binary resource file (``rcc``'s ``.rcc`` output, format versions 1-3)
    by its path inside (``"a/b/c.webp"``), zlib-compressed ones decompressed.

    The format: a ``qres`` header (version, then the offsets of the tree, the data and the
    names, big-endian u32), a tree of nodes (name offset u32, flags u16; a directory then has its
    child count and first child index, a file its locale and data offset; 8 bytes of modification
    time from version 2 on), names as u16 length + u32 hash + UTF-16BE, data as u32 size + bytes
    (zlib ones start with the u32 uncompressed size)."""
    if data[:4] != b"qres":
        raise InputError(f"{name} is not a Qt resource file (no 'qres' header)")
    try:
        version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
        if version not in (1, 2, 3):
            raise InputError(f"{name}: Qt resource format version {version} is not supported (1-3)")
        node_size = 14 if version == 1 else 22
        n_nodes = (len(data) - tree) // node_size

        def name_at(offset: int) -> str:
            (length,) = struct.unpack_from(">H", data, names + offset)
            return data[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")

        files: dict[str, bytes] = {}
        todo, seen = [(0, "")], set()
        while todo:
            index, prefix = todo.pop()
            if index in seen or index >= n_nodes:
                raise InputError(f"{name}: malformed tree (node {index} repeated or out of range)")
            seen.add(index)
            at = tree + index * node_size
            name_offset, flags = struct.unpack_from(">IH", data, at)
            path = f"{prefix}/{name_at(name_offset)}".lstrip("/") if index else ""
            if flags & 2:  # a directory
                count, first = struct.unpack_from(">II", data, at + 6)
                todo.extend((child, path) for child in range(first, first + count))
                continue
            (offset,) = struct.unpack_from(">I", data, at + 10)
            (size,) = struct.unpack_from(">I", data, payload + offset)
            blob = data[payload + offset + 4:payload + offset + 4 + size]
            if flags & 4:
                raise InputError(f"{name}: {path} is zstd-compressed, which this reader does not support")
            files[path] = zlib.decompress(blob[4:]) if flags & 1 else blob
    except (struct.error, zlib.error, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: malformed Qt resource file ({exc})") from None
    return files


def qt_resource_photo(root: Path, p: Photo, containers: dict[str, dict[str, bytes]], dst: Path) -> dict[str, str]:
    """Save the photo that ``p.locator`` (``<container>!/<path>``) names inside a Qt resource file of
    the unpacked package ``root`` to ``dst`` as 8-bit RGB; return its README stanza
    (:func:`readme_attribution`). ``containers`` caches the files of each resource file read."""
    container, inner = p.locator.split(INNER, 1)
    if container not in containers:
        containers[container] = qt_resource_files((root / container).read_bytes(), container)
    files = containers[container]
    if inner not in files:
        raise InputError(f"photo {p.id!r}: {inner} is not in {container} of package {p.package}; "
                         f"the package layout changed -- update CATALOGUE")
    with Image.open(io.BytesIO(files[inner])) as im:
        im.convert("RGB").save(dst)
    return readme_attribution(files, inner)


def _with_upstream(record: dict, upstream: dict[str, str]) -> dict:
    """``record`` with a README stanza's terms: kept as ``upstream``, and its licence and author
    put first (the catalogue's, i.e. the package's, licence kept after it)."""
    record["upstream"] = upstream
    if upstream.get("license"):
        record["licence"] = f"{upstream['license']} (upstream README); package: {record['licence']}"
    if upstream.get("copyright"):
        record["author"] = upstream["copyright"]
    return record


def readme_attribution(files: dict[str, bytes], inner: str) -> dict[str, str]:
    """The stanza (``Copyright:``, ``Source:``, ``License:``, ...) naming ``inner``'s file (by its
    name, or its path from the README's folder) in the nearest ``README`` of its folder or a parent
    folder that names it (GCompris documents each activity's images so, in the style of
    debian/copyright); empty if none names it."""
    base = posixpath.basename(inner)
    folder = posixpath.dirname(inner)
    while folder:
        readme = files.get(f"{folder}/README")
        if readme is not None:
            for stanza in re.split(r"\n\s*\n", readme.decode("utf-8", "replace")):
                fields: dict[str, str] = {}
                key = None
                for line in stanza.splitlines():
                    m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                    if m:
                        key = m.group(1).lower()
                        fields[key] = m.group(2).strip()
                    elif key is not None and line.strip():
                        fields[key] = f"{fields[key]} {line.strip()}".strip()
                patterns = fields.pop("files", "").split()
                relative = inner[len(folder) + 1:]  # as the README names it: from its own folder
                if any(fnmatch.fnmatch(base, pat) or fnmatch.fnmatch(relative, pat) for pat in patterns):
                    return fields
        folder = posixpath.dirname(folder)
    return {}


def read_from_wheel(requirement: str, dist: str, inner: str, licence_dst: Path, *,
                    run: CommandRunner = subprocess.run) -> tuple[str, bytes]:
    """``(version, bytes of inner)`` from the wheel of ``requirement`` (``pip download --no-deps``
    into a temporary folder, read as a zip; nothing is installed); the wheel's licence file is
    copied to ``licence_dst``."""
    import zipfile

    with tempfile.TemporaryDirectory(prefix=f"asuka-{dist}-") as tmp:
        res = _run(run, [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                         "-d", tmp, requirement])
        wheels = sorted(Path(tmp).glob(f"{dist}-*.whl"))
        if res.returncode != 0 or not wheels:
            raise InputError(f"pip download {requirement!r} failed (exit {res.returncode}): "
                             f"{(res.stderr or '').strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            names = zf.namelist()
            if inner not in names:
                raise InputError(f"{wheels[0].name} has no {inner}")
            for info in names:
                if ".dist-info/" in info and Path(info).name.upper().startswith("LICENSE"):
                    licence_dst.write_bytes(zf.read(info))
                    break
            return wheels[0].name.split("-")[1], zf.read(inner)


def fetch_matplotlib_sample(name: str, dst: Path, licenses: Path, *,
                            run: CommandRunner = subprocess.run) -> tuple[str, str]:
    """Copy ``mpl-data/sample_data/<name>`` to ``dst``, from an installed matplotlib or else from
    its wheel (``pip download matplotlib --no-deps``; nothing is installed). Returns
    ``(source, path in it)`` and copies matplotlib's licence into ``licenses``."""
    inner = f"matplotlib/mpl-data/sample_data/{name}"
    try:
        import matplotlib

        base = Path(matplotlib.__file__).parent
        if not dst.is_file():
            shutil.copyfile(base / "mpl-data" / "sample_data" / name, dst)
        return f"matplotlib {matplotlib.__version__}", inner
    except ImportError:
        pass
    version, data = read_from_wheel("matplotlib", "matplotlib", inner, licenses / "matplotlib.LICENSE", run=run)
    if not dst.is_file():
        dst.write_bytes(data)
    return f"matplotlib {version} (wheel)", inner


_PZL_IMAGE_RE = re.compile(rb"^image (\d+) (\d+) (\d+) (\d+)", re.MULTILINE)
_JPEG_SOI = b"\xff\xd8\xff"


def pzl_photo(path: Path) -> Image.Image:
    """The photograph of a jigzo ``.pzl`` puzzle, as RGB.

    The file is a text header (``PzlF``, name, texture map: one ``cropNNN`` line per piece and an
    ``image X Y W H`` line for the whole picture) followed by JPEG images: a thumbnail, then the
    texture atlas of the pieces, which holds the whole picture at ``(X, Y, W, H)``. The largest
    embedded JPEG is the atlas.
    """
    data = path.read_bytes()
    if not data.startswith(b"PzlF"):
        raise InputError(f"{path}: not a jigzo puzzle (no 'PzlF' header)")
    first_jpeg = data.find(_JPEG_SOI)
    rect = _PZL_IMAGE_RE.search(data if first_jpeg < 0 else data[:first_jpeg])  # in the text header
    if rect is None:
        raise InputError(f"{path}: the puzzle's texture map has no 'image X Y W H' line")
    x, y, w, h = (int(v) for v in rect.groups())
    best = None
    for m in re.finditer(re.escape(_JPEG_SOI), data):
        try:
            im = Image.open(io.BytesIO(data[m.start():]))
            im.load()
        except OSError:  # a marker inside another JPEG's data, not an image
            continue
        if best is None or im.width * im.height > best.width * best.height:
            best = im
    if best is None or x + w > best.width or y + h > best.height:
        raise InputError(f"{path}: no embedded JPEG holds the picture's rectangle {x, y, w, h}")
    return best.convert("RGB").crop((x, y, x + w, y + h))


class _ListsOnly(pickle.Unpickler):
    """Unpickles plain lists and numbers only (SciPy's ``ascent.dat``): no class is ever loaded."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def scipy_sample_array(name: str, raw: bytes) -> np.ndarray:
    """Decode ``scipy/misc/<name>.dat``: ``face`` is bz2-compressed 768 x 1024 x 3 bytes, ``ascent``
    a pickled 512 x 512 list of 8-bit levels (read without loading any class)."""
    import bz2

    if name == "face":
        arr = np.frombuffer(bz2.decompress(raw), dtype=np.uint8)
        if arr.size != 768 * 1024 * 3:
            raise InputError(f"scipy face.dat holds {arr.size} bytes, expected 768 x 1024 x 3")
        return arr.reshape(768, 1024, 3)
    if name == "ascent":
        arr = np.asarray(_ListsOnly(io.BytesIO(raw)).load())
        if arr.ndim != 2 or arr.min() < 0 or arr.max() > 255:
            raise InputError(f"scipy ascent.dat holds an array of shape {arr.shape}, expected 8-bit levels (H, W)")
        return arr.astype(np.uint8)
    raise InputError(f"unknown SciPy sample {name!r}: expected 'face' or 'ascent'")


def fetch_scipy_sample(name: str, dst: Path, licenses: Path, *,
                       run: CommandRunner = subprocess.run) -> tuple[str, str]:
    """Save SciPy's ``scipy/misc/<name>.dat`` as the PNG ``dst``, from an installed SciPy that still
    bundles it, else from a ``scipy<1.12`` wheel (``pip download --no-deps``; nothing is
    installed). Returns ``(source, path in it)`` and copies SciPy's licence into ``licenses``."""
    inner = f"scipy/misc/{name}.dat"
    try:
        import scipy

        installed = Path(scipy.__file__).parent / "misc" / f"{name}.dat"
        if installed.is_file():
            Image.fromarray(scipy_sample_array(name, installed.read_bytes())).save(dst)
            _copy_dist_licence("scipy", licenses / "scipy.LICENSE.txt")
            return f"scipy {scipy.__version__}", inner
    except ImportError:
        pass
    version, data = read_from_wheel("scipy<1.12", "scipy", inner, licenses / "scipy.LICENSE.txt", run=run)
    Image.fromarray(scipy_sample_array(name, data)).save(dst)
    return f"scipy {version} (wheel)", inner


def _copy_dist_licence(dist: str, dst: Path) -> None:
    if dst.is_file():
        return
    from importlib import metadata

    try:
        files = metadata.distribution(dist.replace("_", "-")).files or []
    except metadata.PackageNotFoundError:
        return
    for f in files:
        if Path(str(f)).name.upper().startswith("LICENSE"):
            shutil.copyfile(Path(f.locate()), dst)
            return


def _record(p: Photo, file: Path, source: str, path_in_source: str) -> dict:
    with Image.open(file) as im:
        size = list(im.size)
        flat = round(flat_fraction(im), 3)
    if flat > FLAT_WARNING:
        print(f"  warning: {p.id} has {flat:.0%} flat pixel pairs (renders / illustrations score above "
              f"{FLAT_WARNING:.0%}): look at it again", flush=True)
    return {
        "id": p.id,
        "split": p.split,
        "file": f"originals/{file.name}",
        "licence": p.licence,
        "author": p.author,
        "source": source,
        "path_in_source": path_in_source,
        "content": p.content,
        "notes": p.notes,
        "size_wh": size,
        "flat_fraction": flat,
        "sha256": _sha256(file),
    }


# --------------------------------------------------------------------------- crops


@dataclass(frozen=True)
class CropParams:
    """Everything that decides a crop's pixels besides the photo itself."""

    crop_size: int
    seed: int
    max_short_side: int


def load_rgb(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB (grey copied to three channels, alpha dropped)."""
    with Image.open(path) as im:
        return im.convert("RGB")


def downscale_short_side(img: Image.Image, max_short_side: int) -> Image.Image:
    """Shrink so the short side is at most ``max_short_side`` (never enlarges).

    Why: a 256 px window on a 2560 x 1600 wallpaper shows only texture; at short side 1024
    the same window holds a recognisable part of the scene.
    """
    w, h = img.size
    short = min(w, h)
    if short <= max_short_side:
        return img
    s = max_short_side / short
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS, reducing_gap=3.0)


def crop_windows(photo_id: str, base_wh: tuple[int, int], n: int, params: CropParams) -> list[tuple[int, int, int]]:
    """``n`` square windows ``(x0, y0, side)`` on the downscaled photo, deterministically.

    The side is log-uniform in ``[crop_size, short side]`` (so the scale is random between
    1:1 and "whole short side"), the position uniform. The generator is seeded by
    ``(seed, crc32(photo_id))``: one photo's windows do not depend on the others, and the
    first ``n`` windows are the same whatever ``n`` is.
    """
    w, h = base_wh
    short = min(w, h)
    if short < params.crop_size:
        raise InputError(
            f"photo {photo_id!r}: short side {short} px is smaller than the crop size "
            f"{params.crop_size} px; crops would be upscaled"
        )
    rng = np.random.default_rng([params.seed, zlib.crc32(photo_id.encode())])
    lo, hi = math.log(params.crop_size), math.log(short)
    out = []
    for _ in range(n):
        side = min(short, max(params.crop_size, round(math.exp(rng.uniform(lo, hi)))))
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        out.append((x0, y0, side))
    return out


def crop_name(photo_id: str, k: int) -> str:
    return f"{photo_id}_{k:04d}.png"


def build_train_crops(
    photos: dict[str, Path], out_dir: Path, *, crops_per_image: int, params: CropParams
) -> dict[str, int]:
    """Write ``crops_per_image`` PNG crops (``crop_size``\\ :sup:`2`, RGB) per photo into ``out_dir``.

    ``photos``: ``{id: path}`` of the training photos. Existing crops are kept (not redone);
    crops of ids not in ``photos`` (e.g. a photo moved to the eval split) are deleted so they
    cannot leak into training. A ``params.json`` records the parameters; re-running into the
    same folder with a different seed or ``max_short_side`` is an InputError.
    Returns ``{"written": n, "kept": n, "removed": n, "skipped_photos": n}``.
    """
    if crops_per_image < 1:
        raise InputError(f"crops per image must be >= 1, got {crops_per_image}")
    if params.crop_size < 8:
        raise InputError(f"crop size must be >= 8 px, got {params.crop_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / "params.json"
    meta = {"crop_size": params.crop_size, "seed": params.seed, "max_short_side": params.max_short_side}
    old: dict = {}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        clash = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
        if clash:
            raise InputError(
                f"{out_dir} holds crops made with other parameters {clash} (old, new); "
                "use another --out or delete that folder"
            )
    stats = {"written": 0, "kept": 0, "removed": 0, "skipped_photos": 0}
    name_re = re.compile(r"^(.+)_(\d{4,})\.png$")
    for f in sorted(out_dir.glob("*.png")):
        m = name_re.match(f.name)
        if m and m.group(1) not in photos:
            f.unlink()
            stats["removed"] += 1
    windows: dict[str, list] = {}
    for pid, path in photos.items():
        names = [crop_name(pid, k) for k in range(crops_per_image)]
        todo = [k for k, nm in enumerate(names) if not (out_dir / nm).is_file()]
        stats["kept"] += crops_per_image - len(todo)
        known = old.get("windows", {}).get(pid, [])
        if not todo and len(known) >= crops_per_image:  # nothing to draw: skip decoding the photo
            windows[pid] = known[:crops_per_image]
            continue
        base = downscale_short_side(load_rgb(path), params.max_short_side)
        if min(base.size) < params.crop_size:
            print(f"  skip {pid}: {base.size} is smaller than {params.crop_size} px", flush=True)
            stats["skipped_photos"] += 1
            continue
        wins = crop_windows(pid, base.size, crops_per_image, params)
        windows[pid] = [list(w) for w in wins]
        for k in todo:
            x0, y0, side = wins[k]
            crop = base.resize((params.crop_size,) * 2, Image.LANCZOS, box=(x0, y0, x0 + side, y0 + side))
            crop.save(out_dir / names[k])
            stats["written"] += 1
    meta.update(
        crops_per_image=crops_per_image,
        windows_note="[x0, y0, side] on the photo after downscaling its short side to max_short_side",
        windows=windows,
    )
    meta_path.write_text(json.dumps(meta, indent=1))
    return stats


def centre_square(img: Image.Image, size: int) -> Image.Image:
    """The largest centred square of ``img``, resized to ``size`` x ``size`` (Lanczos)."""
    w, h = img.size
    s = min(w, h)
    x0, y0 = (w - s) // 2, (h - s) // 2
    # crop first: resize(box=...) would let the filter read pixels outside the square
    return img.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.LANCZOS, reducing_gap=3.0)


def build_eval(photos: dict[str, Path], out: Path, sizes: Iterable[int]) -> int:
    """Write ``out/<size>/<id>.png`` (centre square, RGB) for each held-out photo; returns new files."""
    written = 0
    for size in sorted(set(sizes)):
        d = out / str(size)
        d.mkdir(parents=True, exist_ok=True)
        for f in d.glob("*.png"):
            if f.stem not in photos:  # no longer held out
                f.unlink()
        for pid, path in photos.items():
            dst = d / f"{pid}.png"
            if not dst.is_file():
                centre_square(load_rgb(path), size).save(dst)
                written += 1
    return written


# --------------------------------------------------------------------------- driver


def markdown_table(catalogue: Sequence[Photo]) -> str:
    """The kept-photo table for data/README.md."""
    rows = ["| id | split | content | author | licence | source |", "| --- | --- | --- | --- | --- | --- |"]
    for p in catalogue:
        where = f"`{p.package}`: {p.locator}" if p.source == "debian" else f"{p.package}: `{p.locator}`"
        rows.append(f"| {p.id} | {p.split} | {p.content} | {p.author} | {p.licence} | {where} |")
    return "\n".join(rows)


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: Sequence[str] | None = None, *, catalogue: Sequence[Photo] = CATALOGUE,
         run: CommandRunner = subprocess.run) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/photos"), help="output folder (default data/photos)")
    ap.add_argument("--crop-size", type=int, default=256, help="training crop side in px (default 256)")
    ap.add_argument("--crops-per-image", type=int, default=200, help="crops per training photo (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the crop windows (default 0)")
    ap.add_argument("--eval-size", type=int, default=None,
                    help="eval image side besides 512 (default: the crop size)")
    ap.add_argument("--max-short-side", type=int, default=1024,
                    help="photos are first downscaled to this short side; crop windows range "
                         "from crop-size to this (default 1024)")
    ap.add_argument("--deb-dir", type=Path, default=None,
                    help="use <package>_*.deb files from this folder instead of apt-get download")
    ap.add_argument("--markdown", action="store_true", help="print the kept-photo table and exit")
    args = ap.parse_args(argv)

    try:
        check_catalogue(catalogue)
        if args.markdown:
            print(markdown_table(catalogue))
            return 0
        if args.max_short_side < args.crop_size:
            raise InputError(f"--max-short-side ({args.max_short_side}) must be >= --crop-size ({args.crop_size})")
        t0 = time.perf_counter()
        out: Path = args.out
        records = fetch_originals(out, catalogue, deb_dir=args.deb_dir, run=run)
        packages = sorted({r["source"] for r in records})
        (out / "LICENSES.json").write_text(json.dumps(
            {"note": "Licence, author and source of each kept photograph; package copyright "
                     "files and wallpaper metadata are in licenses/.",
             "sources": packages, "photos": records}, indent=1, ensure_ascii=False))
        splits = split_ids(catalogue)
        (out / "splits.json").write_text(json.dumps(splits, indent=1))
        t_fetch = time.perf_counter() - t0

        paths = {r["id"]: out / r["file"] for r in records}
        params = CropParams(args.crop_size, args.seed, args.max_short_side)
        crop_dir = out / "train_crops" / str(args.crop_size)
        stats = build_train_crops({i: paths[i] for i in splits["train"]}, crop_dir,
                                  crops_per_image=args.crops_per_image, params=params)
        eval_size = args.eval_size or args.crop_size
        n_eval = build_eval({i: paths[i] for i in splits["eval"]}, out / "eval", (EVAL_FULL_SIZE, eval_size))
        dt = time.perf_counter() - t0
    except InputError as exc:
        print(f"fetch_photos: error: {exc}", file=sys.stderr)
        return 2

    n_crops = len(list(crop_dir.glob("*.png")))
    print(f"photos: {len(records)} kept ({len(splits['train'])} train, {len(splits['eval'])} eval) "
          f"in {out / 'originals'}")
    print(f"train crops {args.crop_size}px: {n_crops} in {crop_dir} (written {stats['written']}, "
          f"already there {stats['kept']}, removed {stats['removed']}, photos skipped {stats['skipped_photos']})")
    print(f"eval: {len(splits['eval'])} photos at {EVAL_FULL_SIZE} and {eval_size} px in {out / 'eval'} "
          f"(written {n_eval})")
    print(f"size on disk: {_dir_size(out) / 2**20:.1f} MiB; time: {dt:.1f} s (fetch {t_fetch:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
