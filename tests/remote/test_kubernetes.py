"""What only the Kubernetes runtime does: the Pod it asks for, its settings, the gateway check, no pause."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from godel.core.ids import new_id
from godel.core.ports import LaunchSpec, ProcessState, WorkspaceSpec
from godel.errors import AgentSpawnError, ConflictError, RuntimeFailure
from godel.runtimes import runtime_for
from godel.runtimes.kubernetes import KubernetesRuntime
from godel.settings import Settings
from tests.remote.conftest import DONE, NAMESPACE, Rig, fake_kubernetes, kubernetes_runtime

ONLY = pytest.mark.parametrize("rig", ["kubernetes"], indirect=True)  # the rig of this runtime alone


async def _start(rig: Rig, launch: LaunchSpec) -> object:
    handle = await rig.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=rig.repo))
    handle = await rig.runtime.start(handle, launch)
    rig.handles.append(handle)
    return handle


@ONLY
async def test_the_pod_is_confined_and_carries_no_credential(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-server")
    rig.runtime = kubernetes_runtime(rig.base, runtime_class="kata", memory_mb=1024, cpus=2.0)
    launch = LaunchSpec(["/bin/sh", "-c", "true"], {"GODEL_GATEWAY_KEY": "vk-1"})
    launch.limits = SimpleNamespace(memory_mb=512, cpus=0.5, pids=None)  # type: ignore[attr-defined]
    handle = await _start(rig, launch)
    pod = fake_kubernetes().pods[(NAMESPACE, handle.extra["remote"])].manifest  # type: ignore[attr-defined]
    spec = pod["spec"]
    assert spec["runtimeClassName"] == "kata"
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    (container,) = spec["containers"]
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["readOnlyRootFilesystem"] is True
    assert container["resources"] == {"requests": {"memory": "512Mi", "cpu": "500m"},
                                      "limits": {"memory": "512Mi", "cpu": "500m"}}  # fmt: skip
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GODEL_GATEWAY_KEY"] == "vk-1" and "ANTHROPIC_API_KEY" not in env
    assert "sk-ant-server" not in str(pod)
    assert pod["metadata"]["labels"]["godel.dev/agent"] == handle.agent_id  # type: ignore[attr-defined]
    assert {"mountPath": str(handle.workspace), "name": "w2"} in container["volumeMounts"] or any(  # type: ignore[attr-defined]
        m["mountPath"] == str(handle.workspace)
        for m in container["volumeMounts"]  # type: ignore[attr-defined]
    )
    await rig.runtime.wait_for_state(handle, DONE, timeout=30)  # type: ignore[arg-type]


@ONLY
async def test_defaults_apply_and_a_pids_limit_is_refused(rig: Rig) -> None:
    rig.runtime = kubernetes_runtime(rig.base, memory_mb=1024, cpus=2.0)
    handle = await _start(rig, LaunchSpec(["/bin/sh", "-c", "true"]))
    pod = fake_kubernetes().pods[(NAMESPACE, handle.extra["remote"])].manifest  # type: ignore[attr-defined]
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"memory": "1024Mi", "cpu": "2000m"}
    assert "runtimeClassName" not in pod["spec"]
    launch = LaunchSpec(["/bin/sh", "-c", "true"])
    launch.limits = SimpleNamespace(memory_mb=None, cpus=None, pids=64)  # type: ignore[attr-defined]
    with pytest.raises(AgentSpawnError, match="pids"):
        await _start(rig, launch)


@ONLY
async def test_an_image_that_cannot_be_pulled_fails_the_start_and_leaves_no_pod(rig: Rig) -> None:
    rig.runtime = kubernetes_runtime(rig.base, image="unpullable:latest")
    handle = await rig.runtime.prepare(WorkspaceSpec(agent_id=new_id(), repo=rig.repo))
    with pytest.raises(RuntimeFailure, match="ErrImagePull"):
        await rig.runtime.start(handle, LaunchSpec(["/bin/sh", "-c", "true"]))
    assert not [k for k in fake_kubernetes().pods if handle.agent_id in k[1]]
    await rig.runtime.discard(handle)


@ONLY
async def test_pause_is_refused_while_it_runs(rig: Rig) -> None:
    assert rig.runtime.capabilities().pause is False
    handle = await _start(rig, LaunchSpec(["/bin/sh", "-c", "sleep 100"]))
    with pytest.raises(ConflictError, match="cannot pause"):
        await rig.runtime.pause(handle)  # type: ignore[arg-type]
    assert (await rig.runtime.status(handle)).state is ProcessState.RUNNING  # type: ignore[arg-type]


def test_a_loopback_gateway_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="gateway_url"):
        KubernetesRuntime(tmp_path / "w", tmp_path / "l", image="x", configuration=object(),
                          gateway_url="http://127.0.0.1:7373")  # fmt: skip


def test_built_from_the_settings(tmp_path: Path) -> None:
    fake = fake_kubernetes()
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
    common = {"home": tmp_path / "home", "kubernetes_kubeconfig": kubeconfig}
    with pytest.raises(RuntimeFailure, match="kubernetes_image"):
        runtime_for(Settings(**common), "kubernetes")  # type: ignore[arg-type]
    with pytest.raises(RuntimeFailure, match="loopback"):
        runtime_for(Settings(**common, kubernetes_image="img"), "kubernetes")  # type: ignore[arg-type]
    runtime = runtime_for(
        Settings(
            **common, kubernetes_image="img", gateway_url="http://10.1.2.3:7373", kubernetes_runtime_class="gvisor"
        ),  # type: ignore[arg-type]
        "kubernetes",
    )
    assert isinstance(runtime, KubernetesRuntime) and runtime.runtime_class == "gvisor"
    assert runtime.capabilities().isolation == "container"
