"""gradlab.torch.try_fixes: a user's own PyTorch training rerun under each candidate fix, ranked like
gradlab fix; the top-ranked fix removes the vanishing gradient of a deep sigmoid MLP."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import gradlab.torch  # noqa: E402
from gradlab.diagnosis.candidates import Fix  # noqa: E402

nn = torch.nn
_g = torch.Generator().manual_seed(0)
X = torch.randn(128, 16, generator=_g)
Y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()


def make_model() -> torch.nn.Module:
    layers: list = []
    for _ in range(10):
        layers += [nn.Linear(16, 16), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(16, 3))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -0.25, 0.25)  # the "standard" init U(±1/√fan_in): gradients vanish
    return model


def train(model: torch.nn.Module, trial: gradlab.torch.Trial) -> None:
    opt = trial.optimizer(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    for i in range(30):
        xb, yb = X[i % 2 * 64:(i % 2 + 1) * 64], Y[i % 2 * 64:(i % 2 + 1) * 64]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        trial.clip(model)
        opt.step()
        if not trial.step(loss):
            break


def test_top_ranked_fix_removes_the_vanishing_gradient() -> None:
    r = gradlab.torch.try_fixes(make_model, train)
    names = list(r.ranked["fix"])
    assert names[-1] == "baseline" and {"fix: relu+he", "fix: batch norm"} <= set(names)
    assert r.skipped == ["residual"]  # a residual connection cannot be added to the user's model
    top, base = r.ranked.iloc[0], r.ranked.iloc[-1]
    assert top["cleared"] == 1.0 and base["cleared"] == 0.0 and "vanishing" in base["remaining"]
    assert top["final_loss"] < base["final_loss"] and top["seeds"] == 2


def test_given_fixes_and_their_optimiser_changes() -> None:
    fixes = [Fix("clip", {"clip_norm": 0.5}, "clip"), Fix("lr ×2", {"lr": 0.2}, "lr"),
             Fix("res", {"residual": True}, "residual")]
    r = gradlab.torch.try_fixes(make_model, train, fixes=fixes, seeds=[3])
    assert r.skipped == ["res"] and set(r.runs["seed"]) == {3}
    clipped = r.metrics[(r.metrics["run"] == "fix: clip s3") & (r.metrics["metric"] == "grad_norm_clipped")]
    assert len(clipped) and clipped["value"].max() <= 0.5 + 1e-6
    lr = r.metrics[(r.metrics["run"] == "fix: lr ×2 s3") & (r.metrics["metric"] == "lr")]["value"]
    assert lr.iloc[0] == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"seeds=\[\] must name at least one seed"):
        gradlab.torch.try_fixes(make_model, train, seeds=[])
