"""Wire models shared by the client and the reference center (pydantic v2 + stdlib only)."""

from kaic.models.auth import (
    SCOPES,
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenInfo,
    Me,
    ProjectInfo,
    ProjectRef,
    RevokeRequest,
    TokenRequest,
    TokenResponse,
)
from kaic.models.common import ErrorBody, ErrorResponse, Health
from kaic.models.images import ImageFormat, ImageInfo
from kaic.models.interactive import ExecStart, ExecStatus, TerminalSize
from kaic.models.jobs import (
    DryRunResult,
    Job,
    JobEvent,
    JobKind,
    JobList,
    JobSubmit,
    Partition,
    Resources,
)
from kaic.models.secrets import SecretInfo, SecretValue
from kaic.models.staging import (
    FileChecksum,
    SshCertificate,
    SshCertificateRequest,
    StagingInfo,
    StorageRoot,
)
from kaic.models.states import TERMINAL_STATES, JobState, is_terminal, outcome_exit_code

__all__ = [
    "SCOPES",
    "TERMINAL_STATES",
    "ApiTokenCreate",
    "ApiTokenCreated",
    "ApiTokenInfo",
    "DryRunResult",
    "ErrorBody",
    "ErrorResponse",
    "ExecStart",
    "ExecStatus",
    "FileChecksum",
    "Health",
    "ImageFormat",
    "ImageInfo",
    "Job",
    "JobEvent",
    "JobKind",
    "JobList",
    "JobState",
    "JobSubmit",
    "Me",
    "Partition",
    "ProjectInfo",
    "ProjectRef",
    "Resources",
    "RevokeRequest",
    "SecretInfo",
    "SecretValue",
    "SshCertificate",
    "SshCertificateRequest",
    "StagingInfo",
    "StorageRoot",
    "TerminalSize",
    "TokenRequest",
    "TokenResponse",
    "is_terminal",
    "outcome_exit_code",
]
