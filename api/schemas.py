"""What the HTTP API answers and accepts (the OpenAPI at /docs is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.jobs import PendingSource
from orchestrator.spec import CampaignSpec
from orchestrator.store import CampaignStatus, RoundStatus, TrialStatus

PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
TEAM_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class CampaignSubmission(CampaignSpec):
    """The body of POST /v1/campaigns: a campaign spec (as in examples/*.yaml), as JSON or as
    YAML (`Content-Type: application/yaml`), plus its queue priority."""

    priority: Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)] = Field(
        default=0, description="Higher starts first; equal priorities start oldest first."
    )


class Links(_Out):
    mlflow: str | None = Field(description="The campaign's MLflow run (when a UI is known).")
    ray_dashboard: str | None = Field(description="The campaign's current Ray Job.")


TeacherStatus = Literal["pending", "training", "loading", "ready", "failed", "cancelled"]


class TeacherOut(_Out):
    """The campaign's first stage: training the teacher, or loading it from a checkpoint."""

    source: Literal["train", "checkpoint"]
    status: TeacherStatus = Field(
        description="pending until the campaign runs; training (or loading) while it runs; "
        "ready once the teacher is stored; failed or cancelled if the campaign ended first."
    )
    updates: int = Field(description="Planned training updates; 0 when loaded.")
    updates_done: int
    loss: float | None = Field(description="Latest training loss (the final one when ready).")
    finished_at: datetime | None = Field(description="When the teacher was ready.")
    checkpoint_uri: str | None = Field(
        description="Where the teacher is kept once ready. A new campaign's `teacher.checkpoint` "
        "may name it, to distil the same teacher with other settings without training it again."
    )
    checkpoint_url: str | None = Field(
        description="The same file from the API (safetensors, its config in the header), once "
        "ready."
    )
    steps: int = Field(description="Its sampling steps: the spec's `steps.start` (DDIM).")
    fid: float | None = Field(
        description="FID of its samples in `steps` steps, once evaluated: what each round's "
        "student is distilled from (same feature network and samples as the rounds' FIDs)."
    )
    samples_url: str | None = Field(description="Its sample grid (PNG), once evaluated.")
    eval_samples: int = Field(description="Samples its evaluation draws (the spec's).")
    eval_samples_done: int = Field(description="Of those, drawn so far.")


class CampaignOut(_Out):
    id: str
    name: str = Field(description="The spec's name (runs are stored under `<id>-<name>`).")
    team: str
    status: CampaignStatus
    reason: str | None = Field(description="Why it has this status (failure, cancel, waiting).")
    priority: int
    gpus: float = Field(description="GPUs it holds while it runs: workers × gpus_per_worker.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    current_round: int | None
    rounds_total: int
    best_fid: float | None = Field(description="Lowest FID of its distilled students so far.")
    progress: float = Field(
        ge=0,
        le=1,
        description="Share of the planned work done: each round weighs the same, its training "
        "updates 90% and its evaluation's samples 10%; a teacher trained by the campaign "
        "weighs as much as a round, by its updates. 1 when succeeded.",
    )
    teacher: TeacherOut
    submission_id: str | None = Field(description="Ray Job id of the current attempt.")
    mlflow_run_id: str | None
    links: Links


class HistoryEntry(_Out):
    """One entry of a campaign's history: a status change, or something that happened while it
    ran (a round's training or evaluation that started again)."""

    at: datetime
    from_status: CampaignStatus | None = Field(description="None: the campaign was created.")
    to_status: CampaignStatus = Field(
        description="The status after it; the same as from_status when the status did not change."
    )
    actor: str = Field(
        description='Who: "team:NAME", "admin", "scheduler" (the reconciler), "driver" (the '
        "campaign's Ray Job)."
    )
    detail: str | None = Field(description="Why, or what happened.")


class CampaignPage(_Out):
    items: list[CampaignOut]
    total: int = Field(description="Campaigns that match, ignoring limit and offset.")
    limit: int
    offset: int


class RoundOut(_Out):
    k: int = Field(description="1-based round number.")
    teacher_steps: int
    student_steps: int
    updates: int = Field(description="Planned updates.")
    updates_done: int
    eval_samples: int = Field(
        description="Samples its evaluation draws: its student's, then its DDIM teacher's at "
        "the same steps (0 when unknown: a round stored before they were counted, whose spec "
        "does not say)."
    )
    eval_samples_done: int = Field(description="Of those, drawn so far.")
    status: RoundStatus
    lr: float | None = Field(description="The learning rate used (chosen by the LR search).")
    loss: float | None = Field(description="Latest training loss.")
    fid: float | None = Field(description="FID of the distilled student at student_steps.")
    ddim_fid: float | None = Field(description="FID of the DDIM teacher at student_steps.")
    wall_seconds: float | None
    gpu_seconds: float | None
    started_at: datetime | None
    finished_at: datetime | None
    samples_url: str | None = Field(description="The student's sample grid, once evaluated.")
    student_url: str | None = Field(
        description="The distilled student (safetensors, its config in the header), once trained."
    )
    mlflow_run_id: str | None


class TrialOut(_Out):
    index: int
    lr: float
    val_loss: float | None = Field(description="Held-out distillation loss.")
    status: TrialStatus


class LossPoint(_Out):
    step: int
    loss: float


class CampaignEvent(_Out):
    """The data of each `campaign` event of GET /v1/campaigns/{id}/events."""

    campaign: CampaignOut
    rounds: list[RoundOut]


class NodeOut(_Out):
    id: str
    alive: bool
    address: str
    cpus: float
    gpus: float
    group: str = Field(
        description="Its worker group: the node's `ray.io/node-group` label (on KubeRay the "
        "groupName, `headgroup` for the head), else `head` for the head node, `default` otherwise."
    )


class GroupOut(_Out):
    name: str = Field(description="The group's name, as on NodeOut.group.")
    nodes: int = Field(description="Its alive nodes.")
    cpus: float = Field(description="CPUs of its alive nodes.")
    gpus: float = Field(description="GPUs of its alive nodes.")


class PendingOut(_Out):
    resources: dict[str, float] = Field(description='One bundle, e.g. {"CPU": 1, "GPU": 1}.')
    count: int = Field(description="How many such bundles wait.")
    source: PendingSource = Field(
        description="tasks: tasks and actors; placement_groups: bundles of pending placement "
        "groups (a Train run's workers)."
    )


class Usage(_Out):
    total: float
    in_use: float


class Demand(_Out):
    campaigns: int
    gpus: float
    cpus: float


class ClusterOut(_Out):
    nodes: list[NodeOut]
    groups: list[GroupOut] = Field(
        description="Worker groups that some node names, the head's first (a group scaled to "
        "zero shows only once Ray has seen one of its nodes)."
    )
    pending: list[PendingOut] | None = Field(
        description="Resources waiting to be placed, cluster-wide (Ray does not say which group "
        "would take them); null when unknown (autoscaler v2's status not read yet, or "
        "unreadable)."
    )
    cpus: Usage
    gpus: Usage
    running: Demand = Field(description="Starting, running and cancelling campaigns.")
    queued: Demand = Field(description="Queued campaigns: the demand not yet placed.")
    autoscaler_request: list[dict[str, float]] = Field(
        description="Bundles last passed to the Ray autoscaler by this API process."
    )


class MeOut(_Out):
    team: str | None = Field(description="None for the admin token.")
    admin: bool
    gpu_quota: float | None


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=TEAM_NAME)]
    gpu_quota: Annotated[float, Field(ge=0)] = 0.0


class TeamOut(_Out):
    name: str
    gpu_quota: float
    created_at: datetime


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=64)] = "default"


class TokenOut(_Out):
    id: int
    team: str
    name: str
    prefix: str = Field(description="The token's first characters, to tell tokens apart.")
    created_at: datetime
    revoked_at: datetime | None
    token: str | None = Field(
        default=None, description="The token itself: shown once, when it is created."
    )


class Problem(_Out):
    detail: str = Field(description="What is wrong, in one sentence.")


class FieldProblem(_Out):
    loc: list[str | int] = Field(description="Where: body / query / header / path, then field.")
    msg: str = Field(description="What is wrong and what is allowed.")
    type: str
    input: Any = Field(default=None, description="The value that was given.")


class ValidationProblem(_Out):
    detail: list[FieldProblem]
    message: str = Field(description="The same, as lines of `field: problem (got value)`.")


class Health(_Out):
    status: str


class Readiness(_Out):
    ready: bool
    store: str
    ray: str
