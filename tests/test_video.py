"""Video portraits: the temporal smoothing of the alpha, clips in and out, and ``render clip.mp4``."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import make_clip
from portraitseg.cli.main import main
from portraitseg.pipeline import PortraitPipeline
from portraitseg.video.run import render_clip
from portraitseg.video.temporal import TemporalSmoother, estimate_flow, luma, temporal_blend, to_grid, warp

# --------------------------------------------------------------------------------------------
# clips and scenes made for the tests


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture ``(h, w)`` in [0.2, 0.8] (something optical flow can follow)."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((1, 1, h // 8, w // 8), dtype=np.float32))
    big = torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    return (0.2 + 0.6 * big.clamp(0, 1))[0, 0].numpy()


def square_scene(h: int, w: int, x: int, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured background with a brighter textured square at column ``x``: ``(frame (1, 3, h, w),
    true alpha (1, 1, h, w))``."""
    background = textured(h, w, 0)
    patch = textured(size, size, 1) * 0.5 + 0.5
    gray = background.copy()
    top = (h - size) // 2
    gray[top:top + size, x:x + size] = patch
    alpha = np.zeros((h, w), np.float32)
    alpha[top:top + size, x:x + size] = 1
    return torch.from_numpy(gray)[None, None].expand(1, 3, h, w).clone(), torch.from_numpy(alpha)[None, None]


def photo_frames(n: int, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """``n`` frames of a textured scene with a square moving right."""
    frames = []
    for i in range(n):
        frame, _ = square_scene(h, w, 10 + 3 * i, size=20)
        frames.append((frame[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return frames


def decoded(path: Path) -> tuple[list[int], tuple[int, int], Fraction, Fraction, list[str]]:
    """``(pts of the video frames, (w, h), average rate, time base, stream types)`` of a file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        kinds = [s.type for s in container.streams]
        rate, base, size = stream.average_rate, stream.time_base, (stream.width, stream.height)
        pts = [f.pts for f in container.decode(video=0)]
    return pts, size, rate, base, kinds


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def pipeline(tiny_weights: Path) -> PortraitPipeline:
    return PortraitPipeline.from_pretrained(tiny_weights, device="cpu")


# --------------------------------------------------------------------------------------------
# the temporal smoothing


def test_static_scene_alpha_converges_and_flicker_drops():
    """A still frame whose per-frame alpha wobbles: the smoothed alpha wobbles far less and stays
    on the true alpha."""
    frame, mask = square_scene(64, 96, 30)
    truth = 0.2 + 0.6 * mask  # soft levels: the noise below needs no clamping
    rng = np.random.default_rng(0)
    smoother = TemporalSmoother()
    raw, smooth = [], []
    for _ in range(30):
        noisy = truth + torch.from_numpy(rng.normal(0, 0.05, truth.shape).astype(np.float32))
        raw.append(noisy)
        smooth.append(smoother(noisy, frame))

    def flicker(seq: list[torch.Tensor]) -> float:
        return float(np.mean([(b - a).abs().mean() for a, b in zip(seq[10:-1], seq[11:], strict=True)]))

    assert flicker(smooth) < 0.5 * flicker(raw)
    assert float((smooth[-1] - truth).abs().mean()) < 0.6 * float((raw[-1] - truth).abs().mean())


@pytest.mark.parametrize("motion", [True, False])
def test_moving_edge_follows_within_two_frames(motion):
    """A square (24 px) that jumps 6 px per frame: the final alpha of each frame (smoothed, then the
    next frame looked ahead to, as a clip is rendered) is on its new place within two frames (no
    trail behind it: off by more than 0.25 on at most a one-pixel line along an edge, 36 px), with
    and without the flow."""
    smoother = TemporalSmoother(motion=motion)
    scenes = [square_scene(64, 96, 10 + 6 * step) for step in range(9)]
    smoothed = None
    for step, (frame, truth) in enumerate(scenes):
        newest = smoother(truth, frame)
        if smoothed is not None and step >= 3:
            alpha, truth = smoother.look_ahead(smoothed), scenes[step - 1][1]
            inter = float((alpha * truth).sum())
            union = float(torch.maximum(alpha, truth).sum())
            assert inter / union > 0.9, (step, inter / union)
            error = (alpha - truth).abs()
            assert float(error.mean()) < 0.005
            assert int((error > 0.25).sum()) <= 36
        smoothed = newest


def test_look_ahead_cuts_the_trail_of_a_faint_edge():
    """A square barely brighter than its background (the residual stays under the threshold) moving
    3 px per frame: the running average trails it; looking one frame ahead shortens the trail."""
    def scene(x: int) -> tuple[torch.Tensor, torch.Tensor]:
        frame, truth = square_scene(64, 96, x, size=20)
        return 0.5 + 0.02 * (frame - 0.5), truth

    smoother = TemporalSmoother(motion=False)
    causal, centred, truths, smoothed = [], [], [], None
    for step in range(10):
        frame, truth = scene(10 + 3 * step)
        newest = smoother(truth, frame)
        if smoothed is not None:
            causal.append(smoothed)
            centred.append(smoother.look_ahead(smoothed))
        truths.append(truth)
        smoothed = newest

    def trail(seq: list[torch.Tensor]) -> float:
        return float(np.mean([(a - t).abs().mean() for a, t in zip(seq[3:], truths[3:], strict=False)]))

    assert trail(centred) < 0.9 * trail(causal)


def test_propagate_carries_the_alpha_with_the_motion():
    smoother = TemporalSmoother()
    frame, before = square_scene(64, 96, 20)
    smoother(before, frame)
    frame, truth = square_scene(64, 96, 24)
    carried = smoother.propagate(frame)
    assert float((carried - truth).abs().mean()) < 0.5 * float((before - truth).abs().mean())


def test_warp_zero_and_integer_flow():
    x = torch.rand(1, 1, 16, 20, generator=torch.Generator().manual_seed(0))
    # the sampling grid is normalised to [-1, 1] and back: errors of ~1.5e-6 on values in [0, 1]
    assert torch.allclose(warp(x, torch.zeros(1, 2, 16, 20)), x, atol=1e-5)
    flow = torch.zeros(1, 2, 16, 20)
    flow[:, 0] = 2  # out(p) = x(p + 2 px to the right)
    assert torch.allclose(warp(x, flow)[..., :, :-2], x[..., :, 2:], atol=1e-5)


def test_flow_finds_a_shift():
    frame, _ = square_scene(64, 96, 30)
    gray = luma(to_grid(frame, (64, 96)))
    moved = torch.roll(gray, shifts=3, dims=-1)  # content moved 3 px right: moved(p) = gray(p - 3)
    flow = estimate_flow(moved, gray)
    assert abs(float(flow[0, 0, 16:48, 16:80].median()) + 3) < 0.75


def test_strength_zero_passes_the_alpha_through():
    frame, truth = square_scene(32, 48, 10, size=8)
    smoother = TemporalSmoother(strength=0.0)
    smoother(truth, frame)
    other = torch.rand_like(truth)
    assert torch.equal(smoother(other, frame), other)


def test_input_checks_name_the_argument():
    a = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="strength"):
        TemporalSmoother(strength=1.0)
    with pytest.raises(ValueError, match="ahead"):
        TemporalSmoother(ahead=-0.1)
    with pytest.raises(ValueError, match="flow"):
        temporal_blend(a, a.expand(1, 3, 8, 8), a, a.expand(1, 3, 8, 8), flow=torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="threshold"):
        temporal_blend(a, a, a, a, threshold=0)
    with pytest.raises(ValueError, match="previous_frame"):
        temporal_blend(a, a, a, torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"alpha: expected a \(B, 1, H, W\)"):
        TemporalSmoother()(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="segmented frame first"):
        TemporalSmoother().propagate(torch.rand(1, 3, 8, 8))


# --------------------------------------------------------------------------------------------
# clips in and out


def test_clip_keeps_frames_rate_size_and_audio(tmp_path, pipeline):
    src = make_clip(tmp_path / "clip.mp4", photo_frames(6), rate=10)
    out = tmp_path / "out.mp4"
    seen = []
    result = render_clip(pipeline, src, out, progress=lambda done, total: seen.append((done, total)))
    assert result.frames == 6 and seen[-1] == (6, 6)
    pts, size, rate, _, kinds = decoded(out)
    src_pts, src_size, src_rate, _, _ = decoded(src)
    assert (len(pts), size, rate) == (6, src_size, src_rate)
    assert kinds == ["video", "audio"]
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert container.streams.audio[0].codec_context.name == "aac"
    assert leftovers(tmp_path) == ["clip.mp4", "out.mp4"]


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_frames_rendered_side_by_side_match_one_at_a_time(tmp_path, pipeline, monkeypatch):
    """Renders on two cores at once (the default on a 2-core CPU) write the same frames, in order, as
    one render at a time."""
    import portraitseg.runtime as runtime

    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    src = make_clip(tmp_path / "clip.mp4", photo_frames(7), rate=10, audio=False)
    side = render_clip(pipeline, src, tmp_path / "side.mp4", threads=1)
    one = render_clip(pipeline, src, tmp_path / "one.mp4", threads=2)  # 2 cores / 2 threads: one at a time
    assert side.frames == one.frames == 7
    a, b = frames_of(side.path), frames_of(one.path)
    assert len(a) == len(b) == 7
    for x, y in zip(a, b, strict=True):  # the same pixels up to the threads' float rounding
        assert np.abs(x.astype(int) - y.astype(int)).mean() < 0.5
    assert decoded(side.path)[0] == decoded(one.path)[0]


def test_variable_frame_rate_keeps_each_frames_time(tmp_path, pipeline):
    """Frames at 0, 40, 80, 200, 220 ms (variable rate) come out at the same times."""
    stamps = [0, 40, 80, 200, 220]
    src = make_clip(tmp_path / "vfr.mp4", photo_frames(5), pts=stamps, time_base=Fraction(1, 1000),
                    audio=False)
    out = tmp_path / "vfr_out.mp4"
    render_clip(pipeline, src, out, every=2)
    pts, _, _, base, _ = decoded(out)
    src_pts, _, _, src_base, _ = decoded(src)
    assert [p * base for p in pts] == [p * src_base for p in src_pts]
    assert [p * src_base for p in src_pts] == [Fraction(s, 1000) for s in stamps]


def test_interrupt_leaves_nothing_under_the_final_name(tmp_path, pipeline):
    src = make_clip(tmp_path / "clip.mp4", photo_frames(4))
    out = tmp_path / "out" / "clip_portrait.mp4"
    out.parent.mkdir()

    def stop(done: int, total: int | None) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_clip(pipeline, src, out, progress=stop)
    assert leftovers(out.parent) == []


def _codec_unknown(path: Path) -> Path:
    data = make_clip(path.with_name("good.mp4"), photo_frames(2), audio=False).read_bytes()
    path.write_bytes(data.replace(b"avc1", b"zzz1"))
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=16000)
        chunk = av.AudioFrame.from_ndarray(np.zeros((2, 1600), np.float32), format="fltp", layout="stereo")
        chunk.sample_rate, chunk.pts = 16000, 0
        for packet in [*sound.encode(chunk), *sound.encode()]:
            out.mux(packet)
    return path


def _odd_size(path: Path) -> Path:
    """A 33x21 FFV1 clip (in Matroska: libx264 itself refuses odd sizes in yuv420p)."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=5)
        stream.width, stream.height, stream.pix_fmt = 33, 21, "yuv444p"
        frame = av.VideoFrame.from_ndarray(np.zeros((21, 33, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return path


BAD_CLIPS = {
    "unreadable": (lambda p: (p.write_bytes(b"not a video" * 50), p)[1], "cannot be read as a video"),
    "audio_only": (_audio_only, "has no video stream"),
    "codec": (_codec_unknown, "cannot be decoded by this FFmpeg"),
    "too_big": (lambda p: make_clip(p, photo_frames(2)), "over the limit of --max-pixels 1,000"),
    "odd_size": (_odd_size, "33x21: H.264 yuv420p needs an even width and height"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CLIPS))
def test_bad_clip_is_refused_by_name_exit_2(tmp_path, tiny_weights, capsys, kind):
    make, message = BAD_CLIPS[kind]
    folder = tmp_path / "in"
    folder.mkdir()
    src = folder / "clip.mp4"
    make(src)
    outdir = tmp_path / "out"
    code = main(["render", str(src), "-o", str(outdir), "--ckpt", str(tiny_weights),
                 "--max-pixels", "1000" if kind == "too_big" else "100000"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: {src}:" in err and message in err, err
    assert "Traceback" not in err
    assert leftovers(outdir) == []


def test_cli_renders_clips_beside_photos(tmp_path, tiny_weights, capsys):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "clip.mp4", photo_frames(3))
    Image.fromarray(photo_frames(1)[0]).save(folder / "photo.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "clip_portrait.mp4").write_bytes(b"keep me")
    code = main(["render", str(folder), "-o", str(tmp_path / "out"), "--ckpt", str(tiny_weights),
                 "--smooth", "0.5", "--matte-every", "2", "--crf", "30"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "frame 3/3" in captured.err
    assert leftovers(tmp_path / "out") == ["clip_portrait.mp4", "clip_portrait_1.mp4", "photo_portrait.png"]
    assert (tmp_path / "out" / "clip_portrait.mp4").read_bytes() == b"keep me"
    assert len(decoded(tmp_path / "out" / "clip_portrait_1.mp4")[0]) == 3


def test_cli_interrupt_mid_clip_leaves_no_output(tmp_path, tiny_weights, capsys, monkeypatch):
    """Ctrl-C at the second frame: exit 130, neither the portrait, its placeholder nor the temporary
    file is left in the output folder."""
    import portraitseg.cli.video as cli_video

    def interrupt(self, done: int, total: int | None) -> None:
        if done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_video.FrameProgress, "__call__", interrupt)
    src = make_clip(tmp_path / "clip.mp4", photo_frames(4))
    code = main(["render", str(src), "-o", str(tmp_path / "out"), "--ckpt", str(tiny_weights)])
    assert code == 130, capsys.readouterr().err
    assert leftovers(tmp_path / "out") == []


def test_stages_warning_only_when_there_are_clips(tmp_path, tiny_weights, capsys):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(photo_frames(1)[0]).save(photo)
    model = ["--ckpt", str(tiny_weights), "--stages"]
    assert main(["render", str(photo), "-o", str(tmp_path / "a"), *model]) == 0
    assert "apply to photos only" not in capsys.readouterr().err
    clip = make_clip(tmp_path / "clip.mp4", photo_frames(2))
    assert main(["render", str(clip), "-o", str(tmp_path / "b"), *model]) == 0
    assert "--stages and --save-alpha apply to photos only" in capsys.readouterr().err
    assert leftovers(tmp_path / "b") == ["clip_portrait.mp4"]


def test_rotated_clip_is_rendered_upright(tmp_path, tiny_weights):
    """A clip stored 96x64 with a display rotation of -90 degrees (a phone's portrait video) is
    segmented and written upright, 64x96, without the rotation; with no blur it is the picture a
    player shows."""
    frames = photo_frames(3)
    src = make_clip(tmp_path / "phone.mp4", frames, audio=False, rotation=-90)
    sharp = PortraitPipeline.from_pretrained(tiny_weights, device="cpu", render_options={"strength": 0.0})
    render_clip(sharp, src, tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as container:
        written = [f for f in container.decode(video=0)]
    assert (written[0].width, written[0].height, written[0].rotation) == (64, 96, 0)
    upright = np.rot90(frames[0], -1).astype(np.float32)  # -90: a quarter turn clockwise
    error = np.abs(written[0].to_ndarray(format="rgb24").astype(np.float32) - upright).mean()
    assert error < 6, error
