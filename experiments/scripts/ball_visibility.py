"""How often the toy dataset's "cube with a ball on its front" hides its ball (docs/toy-prior.md, 2D check).

Renders the cube part alone (half-size 0.3) from the dataset's own cameras and measures how much the image
changes where the ball is added: the summed absolute change of shading and coverage, in pixels. From behind the ball is hidden and the image is a plain cube only
6% smaller than "a cube" (half-size 0.32), about one pixel at 32×32.

    python experiments/scripts/ball_visibility.py toyprior      # the folder from `sjc prior dataset`; prints JSON
"""
import json
import sys
from pathlib import Path

from sjc import toyworld
from sjc.cameras import FINE_VIEWS, orbit_cameras
from sjc.prior_training import load_dataset

def main() -> None:
    data = load_dataset(Path(sys.argv[1] if len(sys.argv) > 1 else "toyprior"))
    i = list(toyworld.SHAPES).index("cube_with_ball")
    az, el = data["azimuth"][i], data["elevation"][i]
    toyworld.SHAPES["_cube_part"] = (lambda p: toyworld.sd_box(p, (0.3, 0.3, 0.3)), "cube part", False)
    cams = orbit_cameras(az, el, data["fov"][i], data["config"]["radius"])
    cube_shaded, cube_bg = toyworld.render_coverage("_cube_part", cams, *data["shaded"].shape[-2:])
    ball_px = ((data["shaded"][i].float() - cube_shaded).abs() + (data["background"][i].float() - cube_bg).abs()).flatten(1).sum(1)
    hidden = ball_px < 0.5
    labels = FINE_VIEWS.index(az, el)
    print(json.dumps({
        "views": len(hidden),
        "ball_hidden_share": round(float(hidden.float().mean()), 3),          # the ball changes under half a pixel
        "ball_hidden_share_by_view": {v: round(float(hidden[labels == k].float().mean()), 3)
                                      for k, v in enumerate(FINE_VIEWS.labels)},
    }, indent=2))


if __name__ == "__main__":
    main()
