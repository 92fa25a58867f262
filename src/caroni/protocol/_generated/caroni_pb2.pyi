import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFICED: _ClassVar[JobStatus]
    JOB_STATUS_PENDING: _ClassVar[JobStatus]
    JOB_STATUS_QUEUED: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_PAUSED: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFICED: JobStatus
JOB_STATUS_PENDING: JobStatus
JOB_STATUS_QUEUED: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_PAUSED: JobStatus

class Signature(_message.Message):
    __slots__ = ("signator_certificate", "payload_signature")
    SIGNATOR_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signator_certificate: str
    payload_signature: str
    def __init__(self, signator_certificate: _Optional[str] = ..., payload_signature: _Optional[str] = ...) -> None: ...

class CaroniEnvelope(_message.Message):
    __slots__ = ("signature", "payload", "message_id", "sent_at", "sender", "extensions")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    payload: _any_pb2.Any
    message_id: str
    sent_at: _timestamp_pb2.Timestamp
    sender: bytes
    extensions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., payload: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., message_id: _Optional[str] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sender: _Optional[bytes] = ..., extensions: _Optional[_Iterable[str]] = ...) -> None: ...

class JobParameter(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Site(_message.Message):
    __slots__ = ("site_identifier", "site_uuid", "site_contact")
    SITE_IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    SITE_UUID_FIELD_NUMBER: _ClassVar[int]
    SITE_CONTACT_FIELD_NUMBER: _ClassVar[int]
    site_identifier: str
    site_uuid: bytes
    site_contact: str
    def __init__(self, site_identifier: _Optional[str] = ..., site_uuid: _Optional[bytes] = ..., site_contact: _Optional[str] = ...) -> None: ...

class JobType(_message.Message):
    __slots__ = ("job_type_name", "required_parameters", "optional_parameters")
    JOB_TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    job_type_name: str
    required_parameters: _containers.RepeatedScalarFieldContainer[str]
    optional_parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_type_name: _Optional[str] = ..., required_parameters: _Optional[_Iterable[str]] = ..., optional_parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class WorkFlowInput(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class WorkFlowCreate(_message.Message):
    __slots__ = ("signature", "template_name", "wf_name", "inputs", "workflow_uuid", "max_attempts")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_NAME_FIELD_NUMBER: _ClassVar[int]
    WF_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_UUID_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    template_name: str
    wf_name: str
    inputs: _containers.RepeatedCompositeFieldContainer[WorkFlowInput]
    workflow_uuid: bytes
    max_attempts: int
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., template_name: _Optional[str] = ..., wf_name: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[WorkFlowInput, _Mapping]]] = ..., workflow_uuid: _Optional[bytes] = ..., max_attempts: _Optional[int] = ...) -> None: ...

class JobFulfillmentRequest(_message.Message):
    __slots__ = ("signature", "request_uuid", "job_type_name", "parameters", "claims_full")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_UUID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FULL_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    request_uuid: bytes
    job_type_name: str
    parameters: _containers.RepeatedCompositeFieldContainer[JobParameter]
    claims_full: bool
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., request_uuid: _Optional[bytes] = ..., job_type_name: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[JobParameter, _Mapping]]] = ..., claims_full: bool = ...) -> None: ...

class JobFulfillmentDecline(_message.Message):
    __slots__ = ("signature", "request_uuid", "site", "decline_message")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_UUID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    DECLINE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    request_uuid: bytes
    site: Site
    decline_message: str
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., request_uuid: _Optional[bytes] = ..., site: _Optional[_Union[Site, _Mapping]] = ..., decline_message: _Optional[str] = ...) -> None: ...

class AgentLoad(_message.Message):
    __slots__ = ("slots", "running", "reserved")
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    slots: int
    running: int
    reserved: int
    def __init__(self, slots: _Optional[int] = ..., running: _Optional[int] = ..., reserved: _Optional[int] = ...) -> None: ...

class JobFulfillmentOffer(_message.Message):
    __slots__ = ("signature", "request_uuid", "offer_uuid", "site", "offer_message", "expiration", "load", "claim")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_UUID_FIELD_NUMBER: _ClassVar[int]
    OFFER_UUID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    OFFER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    request_uuid: bytes
    offer_uuid: bytes
    site: Site
    offer_message: str
    expiration: _timestamp_pb2.Timestamp
    load: AgentLoad
    claim: Claim
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., request_uuid: _Optional[bytes] = ..., offer_uuid: _Optional[bytes] = ..., site: _Optional[_Union[Site, _Mapping]] = ..., offer_message: _Optional[str] = ..., expiration: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., load: _Optional[_Union[AgentLoad, _Mapping]] = ..., claim: _Optional[_Union[Claim, _Mapping]] = ...) -> None: ...

class JobFulfillmentOfferAccept(_message.Message):
    __slots__ = ("signature", "request_uuid", "offer_uuid", "accept_message")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_UUID_FIELD_NUMBER: _ClassVar[int]
    OFFER_UUID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    request_uuid: bytes
    offer_uuid: bytes
    accept_message: str
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., request_uuid: _Optional[bytes] = ..., offer_uuid: _Optional[bytes] = ..., accept_message: _Optional[str] = ...) -> None: ...

class JobFulfillmentOfferReject(_message.Message):
    __slots__ = ("signature", "request_uuid", "offer_uuid", "reject_message")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_UUID_FIELD_NUMBER: _ClassVar[int]
    OFFER_UUID_FIELD_NUMBER: _ClassVar[int]
    REJECT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    request_uuid: bytes
    offer_uuid: bytes
    reject_message: str
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., request_uuid: _Optional[bytes] = ..., offer_uuid: _Optional[bytes] = ..., reject_message: _Optional[str] = ...) -> None: ...

class JobAccepted(_message.Message):
    __slots__ = ("signature", "job_uuid", "offer_uuid")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    OFFER_UUID_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    offer_uuid: bytes
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ..., offer_uuid: _Optional[bytes] = ...) -> None: ...

class JobQueued(_message.Message):
    __slots__ = ("signature", "job_uuid", "offer_uuid")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    OFFER_UUID_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    offer_uuid: bytes
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ..., offer_uuid: _Optional[bytes] = ...) -> None: ...

class JobStatusRequest(_message.Message):
    __slots__ = ("signature", "job_uuid")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ...) -> None: ...

class JobStatusUpdate(_message.Message):
    __slots__ = ("signature", "job_uuid", "job_status", "status_info")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    JOB_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_INFO_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    job_status: JobStatus
    status_info: str
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ..., job_status: _Optional[_Union[JobStatus, str]] = ..., status_info: _Optional[str] = ...) -> None: ...

class JobKill(_message.Message):
    __slots__ = ("signature", "job_uuid", "kill_info")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    KILL_INFO_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    kill_info: str
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ..., kill_info: _Optional[str] = ...) -> None: ...

class JobDataAvailable(_message.Message):
    __slots__ = ("signature", "job_uuid", "parameters")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    parameters: _containers.RepeatedCompositeFieldContainer[JobParameter]
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ..., parameters: _Optional[_Iterable[_Union[JobParameter, _Mapping]]] = ...) -> None: ...

class JobDataReady(_message.Message):
    __slots__ = ("signature", "job_uuid", "parameters")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    parameters: _containers.RepeatedCompositeFieldContainer[JobParameter]
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ..., parameters: _Optional[_Iterable[_Union[JobParameter, _Mapping]]] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("signature", "claim_uuid", "job_type_names", "capacity", "expiration")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_UUID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_NAMES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    claim_uuid: bytes
    job_type_names: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    expiration: _timestamp_pb2.Timestamp
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., claim_uuid: _Optional[bytes] = ..., job_type_names: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., expiration: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobAssignment(_message.Message):
    __slots__ = ("signature", "claim_uuid", "job_uuid", "job_type_name", "parameters", "awaited_parameters", "input_links")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_UUID_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    AWAITED_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INPUT_LINKS_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    claim_uuid: bytes
    job_uuid: bytes
    job_type_name: str
    parameters: _containers.RepeatedCompositeFieldContainer[JobParameter]
    awaited_parameters: _containers.RepeatedScalarFieldContainer[str]
    input_links: _containers.RepeatedCompositeFieldContainer[InputLink]
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., claim_uuid: _Optional[bytes] = ..., job_uuid: _Optional[bytes] = ..., job_type_name: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[JobParameter, _Mapping]]] = ..., awaited_parameters: _Optional[_Iterable[str]] = ..., input_links: _Optional[_Iterable[_Union[InputLink, _Mapping]]] = ...) -> None: ...

class InputLink(_message.Message):
    __slots__ = ("job_uuid", "parameter", "source_job_uuid", "source_output")
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    job_uuid: bytes
    parameter: str
    source_job_uuid: bytes
    source_output: str
    def __init__(self, job_uuid: _Optional[bytes] = ..., parameter: _Optional[str] = ..., source_job_uuid: _Optional[bytes] = ..., source_output: _Optional[str] = ...) -> None: ...

class JobAssignmentRefusal(_message.Message):
    __slots__ = ("signature", "job_uuid", "refusal_message", "claim_uuid")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_UUID_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    refusal_message: str
    claim_uuid: bytes
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ..., refusal_message: _Optional[str] = ..., claim_uuid: _Optional[bytes] = ...) -> None: ...

class JobFinished(_message.Message):
    __slots__ = ("signature", "job_uuid", "job_status", "status_info", "parameters", "claim", "filled", "filled_from")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    JOB_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_INFO_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    FILLED_FIELD_NUMBER: _ClassVar[int]
    FILLED_FROM_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    job_uuid: bytes
    job_status: JobStatus
    status_info: str
    parameters: _containers.RepeatedCompositeFieldContainer[JobParameter]
    claim: Claim
    filled: _containers.RepeatedCompositeFieldContainer[InputLink]
    filled_from: _containers.RepeatedCompositeFieldContainer[InputLink]
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., job_uuid: _Optional[bytes] = ..., job_status: _Optional[_Union[JobStatus, str]] = ..., status_info: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[JobParameter, _Mapping]]] = ..., claim: _Optional[_Union[Claim, _Mapping]] = ..., filled: _Optional[_Iterable[_Union[InputLink, _Mapping]]] = ..., filled_from: _Optional[_Iterable[_Union[InputLink, _Mapping]]] = ...) -> None: ...

class MessageBundle(_message.Message):
    __slots__ = ("envelopes",)
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, envelopes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class WorkFlowStatusRequest(_message.Message):
    __slots__ = ("signature", "workflow_uuid")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_UUID_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    workflow_uuid: bytes
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., workflow_uuid: _Optional[bytes] = ...) -> None: ...

class StepStatus(_message.Message):
    __slots__ = ("step_name", "job_type_name", "state", "attempts", "agent", "reason")
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    step_name: str
    job_type_name: str
    state: str
    attempts: int
    agent: str
    reason: str
    def __init__(self, step_name: _Optional[str] = ..., job_type_name: _Optional[str] = ..., state: _Optional[str] = ..., attempts: _Optional[int] = ..., agent: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WorkFlowStatus(_message.Message):
    __slots__ = ("signature", "workflow_uuid", "state", "reason", "outputs", "wf_name", "template_name", "steps")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_UUID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    WF_NAME_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_NAME_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    workflow_uuid: bytes
    state: str
    reason: str
    outputs: _containers.RepeatedCompositeFieldContainer[WorkFlowInput]
    wf_name: str
    template_name: str
    steps: _containers.RepeatedCompositeFieldContainer[StepStatus]
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., workflow_uuid: _Optional[bytes] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[WorkFlowInput, _Mapping]]] = ..., wf_name: _Optional[str] = ..., template_name: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[StepStatus, _Mapping]]] = ...) -> None: ...

class WorkFlowCancel(_message.Message):
    __slots__ = ("signature", "workflow_uuid", "reason")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_UUID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    signature: Signature
    workflow_uuid: bytes
    reason: str
    def __init__(self, signature: _Optional[_Union[Signature, _Mapping]] = ..., workflow_uuid: _Optional[bytes] = ..., reason: _Optional[str] = ...) -> None: ...
