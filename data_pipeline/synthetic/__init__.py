"""Synthetic deepfake benchmark: procedurally rendered talking faces in the three real layouts.

The generator renders *real* videos of shaded, talking faces (identity, pose, background and
lighting vary per video; the audio track's loudness follows the mouth opening), and derives
*fakes* from them, one manipulation family per fake:

=========================  ====================================================  ==========
family                     what is done to the real video                        specialist
=========================  ====================================================  ==========
``face_swap``              inner face of another identity (same pose and mouth)  bg
                           pasted with a hard seam and a dark/bright halo, a
                           colour cast, smoothed and noise-free
``double_compression``     face area JPEG-compressed at quality ~10 (8x8         cm
                           blocks) before the final H.264
``resolution_mismatch``    face downscaled x3-4 and upscaled back (blurry face   rr
                           on a sharp, noisy frame)
``temporal_flicker``       per-frame jitter of the face's position, gain and     tm
                           colour
``lighting_inconsistency`` face re-rendered lit from the opposite side in the     bg
                           opposite colour temperature (hair, neck and
                           background keep the scene's light)
``lip_sync_shift``         audio shifted by 0.3-0.5 s against the mouth (the     av
                           shift that decorrelates loudness and mouth most)
``low_light``              a face swap on a low-light (dark, noisy) capture;     ll
                           the pasted face is smooth and noise-free. Low-light
                           *reals* exist too: darkness is not the fake signal
=========================  ====================================================  ==========

Reals are captured in normal light or in low light (``SynthConfig.low_light_fraction``).
Normal-light reals get the six other families (all of them, or ``fakes_per_real`` in rotation);
low-light reals get one ``low_light`` fake. A fake keeps the identity group of its target real.
``FAMILY_SPECIALIST`` maps each family to the specialist whose artefact it carries; the truth
file's ``light`` field lets a low-light specialist train on low-light reals vs its fakes.

Faces are shaded like real ones (Lambertian head, dark eye band and brows, bright nose bridge
and cheeks, dark mouth interior) so that OpenCV's frontal-face Haar cascade finds them; the
truth boxes are calibrated to the cascade's boxes.

Layouts written under ``root`` (see ``data/README.md`` for the real metadata formats):

* ``ffpp/original_sequences/youtube/c23/videos/000.mp4``,
  ``ffpp/manipulated_sequences/<Folder>/c23/videos/<target>_<source>.mp4`` and
  ``ffpp/splits/{train,val,test}.json`` (official pair lists);
* ``celebdf/{Celeb-real,YouTube-real,Celeb-synthesis}/...`` and
  ``celebdf/List_of_testing_videos.txt`` (1 = REAL, 0 = FAKE, no trailing newline);
* ``dfdc/dfdc_train_part_<k>/<10 letters>.mp4`` + ``metadata.json`` per part (DFDC's format:
  ``label``, ``original``, ``split``; no face information, like the real one);
* ``<dataset>/synthetic_truth.json``: ``{video_id: {"label", "family", "boxes", "group",
  "light"}}`` where ``video_id`` is the path relative to the dataset root and ``boxes`` holds
  one ``[x0, y0, x1, y1]`` face box per frame (frame pixels, 0.01 px). DFDC entries also have
  ``"persons"`` (1 or 2) and ``"faces"``: one ``{"boxes": [[x0, y0, x1, y1] per frame, 0.1 px],
  "fake": bool}`` per person, left to right (a one-person video's face is fake when the video
  is); a two-person video's ``boxes`` are its fake face's (a real's: the left person's).

Two-person DFDC videos (:mod:`.pairs`, ``SynthConfig.dfdc_two_person_fraction`` of the DFDC
reals, chosen by seed): two identities side by side, each moving and talking on its own, in a
frame ``2 * width`` wide and ``height`` high; each face is the size of a one-person video's face.
The audio is both voices mixed. Each fake of such a real manipulates exactly one face (by seed;
a real's fakes alternate between the two faces), and is the real's rendering outside that face's
region: frame-level families (compression, resolution, flicker, lighting, low light) act on that
face's region only, and ``lip_sync_shift`` shifts that person's voice.

Everything is deterministic given ``SynthConfig.seed``: each video draws from its own
``numpy`` generator seeded by (seed, dataset, video), so worker scheduling does not matter, and
videos are encoded single-threaded, so the files are byte-identical from run to run.

CLI: ``python -m data_pipeline.synthetic --out DIR [--seed N] [--scale tiny|small|default]``
(also ``interceptor synth``).

Modules: :mod:`.config` (families, :class:`SynthConfig`, seeding), :mod:`.scenes` (identities,
scenes, backgrounds), :mod:`.face` (the face, part by part), :mod:`.rendering` (the video and its
voice), :mod:`.families` (low-light capture, manipulation families), :mod:`.pairs` (two-person
videos), :mod:`.layouts` (the three folder layouts and their metadata) and :mod:`.generation` (presets, generation, CLI).
"""

from __future__ import annotations

from .config import (
    DATASETS,
    FAMILIES,
    FAMILY_FOLDERS,
    FAMILY_SPECIALIST,
    SPECIALIST_FAMILY,
    SynthConfig,
    _rng,  # noqa: F401  (not public; tests and benchmarks seed with it)
)
from .families import LowLight, apply_family, capture, make_low_light
from .generation import SCALES, config_for_scale, generate, main, render_real, write_sample
from .pairs import MIX_GAIN, capture_pair, make_pair_scenes, mix_voices, pair_fake, render_pair
from .rendering import Rendered, render
from .scenes import Identity, Scene, make_identity, make_scene, render_background

__all__ = [
    "DATASETS",
    "FAMILIES",
    "FAMILY_FOLDERS",
    "FAMILY_SPECIALIST",
    "SPECIALIST_FAMILY",
    "MIX_GAIN",
    "SCALES",
    "Identity",
    "LowLight",
    "Rendered",
    "Scene",
    "SynthConfig",
    "apply_family",
    "capture",
    "capture_pair",
    "config_for_scale",
    "generate",
    "main",
    "make_identity",
    "make_low_light",
    "make_pair_scenes",
    "make_scene",
    "mix_voices",
    "pair_fake",
    "render",
    "render_background",
    "render_pair",
    "render_real",
    "write_sample",
]
