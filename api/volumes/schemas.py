"""Schemas of the volumes resource (what each worker's scans found, per filesystem).

No absolute host path ever appears: files are ``{root, path}`` relative to a storage root.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.jobs.schemas import NAME, Strict

RISKS = validate.OneOf(["ok", "warning", "critical"])


class RootFileSchema(Schema):
    root = fields.String()
    path = fields.String(metadata={"description": "relative to the root"})


class ChainProblemSchema(Schema):
    code = fields.String(metadata={"description": "missing_parent, id_mismatch, loop, "
                                   "unreadable, interrupted, partial_output"})
    message = fields.String()


class VmSchema(Schema):
    """The Hyper-V VM whose configuration names the chain (the newest layer it names)."""

    vm_name = fields.String(allow_none=True)
    vm_id = fields.String(allow_none=True)
    config = fields.Nested(RootFileSchema, allow_none=True,
                           metadata={"description": "its configuration file (XML); null "
                                     "outside the roots"})
    controller_type = fields.String(allow_none=True, metadata={"description": "IDE or SCSI"})
    controller_number = fields.Integer(allow_none=True)
    controller_location = fields.Integer(allow_none=True)
    windows_path = fields.String(allow_none=True, metadata={
        "description": "the disk as the Hyper-V host names it (from the configuration)"})
    file = fields.Nested(RootFileSchema, allow_none=True,
                         metadata={"description": "the layer that path maps to"})
    mapping = fields.String(allow_none=True, metadata={
        "description": "how the Windows path was mapped to the file (share, tail guess)"})
    generation = fields.Integer(allow_none=True)
    notes = fields.List(fields.String(), metadata={
        "description": "caveats, e.g. a match by path tail only (a guess to confirm)"})


class CheckpointSchema(Schema):
    """A Hyper-V checkpoint whose configuration names one of the chain's layers."""

    id = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    config = fields.Nested(RootFileSchema, allow_none=True)
    windows_path = fields.String(allow_none=True)
    file = fields.Nested(RootFileSchema, allow_none=True)


class ChainSchema(Schema):
    id = fields.String(metadata={"description": "stable: host and leaf"})
    host = fields.String()
    volume = fields.String(metadata={"description": "the id of the volume holding it"})
    root = fields.String(allow_none=True)
    leaf = fields.String(allow_none=True, metadata={"description": "root-relative path of "
                                                    "the layer the guest writes"})
    layers = fields.List(fields.Nested(RootFileSchema, allow_none=True),
                         metadata={"description": "newest first; null outside the roots"})
    format = fields.String(allow_none=True)
    type = fields.String(allow_none=True)
    virtual_size = fields.Integer(allow_none=True)
    allocated_bytes = fields.Integer()
    max_bytes = fields.Integer()
    growth_bytes = fields.Integer(metadata={"description": "what its leaf can still take"})
    snapshots = fields.Integer()
    oldest_snapshot_age_seconds = fields.Integer(allow_none=True)
    archived = fields.Boolean()
    problems = fields.List(fields.Nested(ChainProblemSchema))
    risk = fields.String(validate=RISKS)
    vm = fields.Nested(VmSchema, allow_none=True,
                       metadata={"description": "the VM that owns it; null when no "
                                 "configuration on the roots names a layer"})
    checkpoints = fields.List(fields.Nested(CheckpointSchema), metadata={
        "description": "checkpoints whose configurations name its layers"})


class PlanJobSchema(Schema):
    """A ``POST /v1/jobs`` body, ready to submit."""

    type = fields.String()
    host = fields.String()
    root = fields.String()
    path = fields.String()
    options = fields.Dict()


class PlanStepSchema(Schema):
    job = fields.Nested(PlanJobSchema, allow_none=True)
    operation = fields.String()
    description = fields.String()
    needs_bytes = fields.Integer()
    takes_bytes = fields.Integer()
    frees_bytes = fields.Integer()
    free_before_bytes = fields.Integer()
    free_after_bytes = fields.Integer()


class InfeasibleSchema(Schema):
    chain = fields.Nested(RootFileSchema, allow_none=True)
    why = fields.String()
    would_fit_if = fields.List(fields.String())


class VolumePlanSchema(Schema):
    steps = fields.List(fields.Nested(PlanStepSchema))
    infeasible = fields.List(fields.Nested(InfeasibleSchema))
    free_after_bytes = fields.Integer()
    remaining_risk = fields.String(validate=RISKS)
    remaining_reasons = fields.List(fields.String())


class SampleSchema(Schema):
    at = fields.String()
    free_bytes = fields.Integer()
    disk_bytes = fields.Integer()
    growth_bytes = fields.Integer()


class VolumeSummarySchema(Schema):
    id = fields.String(metadata={"description": "stable: host and mount point"})
    host = fields.String()
    roots = fields.List(fields.String(), metadata={"description": "roots on this volume"})
    total_bytes = fields.Integer()
    free_bytes = fields.Integer()
    disk_bytes = fields.Integer()
    growth_bytes = fields.Integer()
    reserve_bytes = fields.Integer()
    risk = fields.String(validate=RISKS)
    reasons = fields.List(fields.String())
    rate_bytes_per_second = fields.Float(allow_none=True, metadata={
        "description": "least-squares slope of free space over the window (negative: "
                       "filling)"})
    seconds_to_full = fields.Float(allow_none=True, metadata={
        "description": "until free space reaches the reserve; null when not falling"})
    chain_count = fields.Integer()
    oldest_snapshot_age_seconds = fields.Integer(allow_none=True)
    scanned_at = fields.String()
    scan_seconds = fields.Float()
    risk_since = fields.String()


class VolumeSchema(VolumeSummarySchema):
    chains = fields.List(fields.Nested(ChainSchema))
    plan = fields.Nested(VolumePlanSchema, allow_none=True)
    history = fields.List(fields.Nested(SampleSchema), metadata={
        "description": "the last day at scan resolution, then hourly back to 30 days"})


class VolumeListSchema(Schema):
    items = fields.List(fields.Nested(VolumeSummarySchema))


class VolumeQuerySchema(Strict):
    host = fields.String(validate=NAME)
    risk = fields.String(validate=RISKS)
