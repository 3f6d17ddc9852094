"""The six Interceptor specialists (design section 2). One row per specialist.

AV, CM, RR and TM carry the seed's contract numbers (branch channels and kernels, 7x7 pooling,
``channels * 7 * 7`` features). BG and LL were not specified by the seed; they are designed here
in the same style:

* **BG, Background/Lighting** (38 channels -> 1862 features). Lighting mismatches between a pasted
  face and its scene are low-frequency, so the branches range from a wide 9x9 illumination
  estimator (shading gradients across the face) through a 7x7 shadow-direction branch and a 5x5
  face/background boundary branch to a 3x3 colour-temperature branch (local colour cast).
* **LL, Low-Light** (40 channels -> 1960 features). Dark, noisy capture hides blending seams in
  noise; the module sees the exposure-normalised frame (:attr:`InputView.LOW_LIGHT`) and looks at
  the fine noise residual (3x3, stride 1: noise statistics need full resolution), chroma noise
  (5x5), the luminance response curve (5x5) and detail recovery in shadows (7x7).

Temporal specialists (TM, and AV for mouth motion) use the ``motion`` view; AV also fuses an
aligned audio window when the clip has one.

The four single-frame specialists (CM, RR, BG, LL) also get their view's high-pass residual
(``residual=True``): codec blocks and quantisation (CM), missing detail of an upscaled face (RR),
blending seams along a pasted face (BG) and sensor noise a generated face lacks (LL) are all fine
texture. With it, in the CPU demo's chains (in-process, two to four seeds), the final DFDC test
video AUC went from 0.68 to 0.85 (CM), 0.74 to 0.83 (RR), 0.69 to 0.80 (BG) and 0.75 to 0.86 (LL).
TM and AV get it too, on their motion view, with their wide branches at stride 4 (face-level
motion is coarse; this keeps their cost within ~25% of what it was): their motion channels catch
TM's own family (flicker), but a specialist is scored on every fake, and the residual (the frame's
fine texture, and where the temporal deviation changes abruptly) lifted TM from 0.81 / 0.80 to
0.89 / 0.85 and AV from 0.86 / 0.81 to 0.88 / 0.89 (two seeds each, 3 clips per video).
"""

from __future__ import annotations

from specialists.registry import BranchSpec as B
from specialists.registry import InputView, SpecialistSpec, register_specialist

register_specialist(SpecialistSpec(
    key="av", name="Audio-Visual", detects="lip-sync, voice/mouth correlation",
    # as TM: motion view + residual, the wide branches at stride 4
    branches=(B("lip_analyzer", 16, 5, stride=4), B("motion_detector", 12, 7, stride=4),
              B("temporal_checker", 10, 3), B("av_correlation", 10, 3)),
    view=InputView.MOTION, residual=True, uses_audio=True, uses_sync=True,
))

register_specialist(SpecialistSpec(
    key="cm", name="Compression", detects="DCT coefficients, quantisation, block boundaries",
    # the 8x8 analyser steps by 8: one response per codec block, like a learned block DCT
    branches=(B("dct_analyzer", 12, 8, stride=8), B("quantization_detector", 10, 5),
              B("block_boundary_checker", 10, 7), B("compression_pattern", 8, 3)),
    view=InputView.GRID, residual=True,
))

register_specialist(SpecialistSpec(
    key="rr", name="Resolution", detects="multi-scale resolution, upscaling, edge sharpness",
    branches=(B("multiscale_analyzer", 12, 5), B("upscaling_detector", 10, 7),
              B("edge_sharpness", 8, 3, stride=1), B("resolution_consistency", 6, 9)),
    # resampling leaves its trace relative to the native pixel grid (interpolation correlates
    # neighbouring pixels): RR sees the native-resolution, unfiltered codec-grid patch, as CM does
    view=InputView.GRID, residual=True,
))

register_specialist(SpecialistSpec(
    key="tm", name="Temporal", detects="frame consistency, motion flow, temporal artifacts",
    # face-level motion (jitter, flicker) is coarse: the wide branches step by 4, which with the
    # residual costs ~15% more than stride 2 without it (TM's chain is the demo's longest)
    branches=(B("frame_consistency", 16, 5, stride=4), B("motion_flow", 14, 7, stride=4),
              B("temporal_artifacts", 12, 3), B("sequence_coherence", 10, 9, stride=4)),
    view=InputView.MOTION, residual=True,
))

register_specialist(SpecialistSpec(
    key="bg", name="Background/Lighting", detects="lighting and background consistency",
    branches=(B("illumination_estimator", 12, 9), B("shadow_direction", 10, 7),
              B("boundary_consistency", 8, 5), B("color_temperature", 8, 3)),
    # shading and colour cast as decoded: the stage filters (CLAHE) equalise shading away, so the
    # branches see the unfiltered codec-grid patch; the lighting cues compare face and surround
    view=InputView.GRID, residual=True, uses_lighting=True,
))

register_specialist(SpecialistSpec(
    key="ll", name="Low-Light", detects="fakes under dark, noisy capture",
    branches=(B("noise_residual", 12, 3, stride=1), B("chroma_noise", 10, 5),
              B("luminance_curve", 10, 5), B("detail_recovery", 8, 7)),
    view=InputView.LOW_LIGHT, residual=True,
))
