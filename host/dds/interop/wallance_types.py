"""Python mirror of host/dds/idl/wallance.idl for Eclipse Cyclone DDS (`cyclonedds`).

Written by hand from the IDL only (no Rust knowledge), the way another vendor
would; every struct @final, written as XCDR1 (see DATA_REPRESENTATION).
"""

from dataclasses import dataclass

import cyclonedds.idl.types as t
from cyclonedds.idl import IdlStruct, IdlUnion
from cyclonedds.idl.annotations import final

Octets32 = t.array[t.byte, 32]
Octets64 = t.array[t.byte, 64]


@final
@dataclass
class Share(IdlStruct, typename="wallance::Share"):
    sender: Octets32
    seq: t.uint64
    time_ms: t.uint64
    topic: t.bounded_str[64]
    value: t.float64
    sig: Octets64


@final
@dataclass
class Param(IdlStruct, typename="wallance::Param"):
    key: t.bounded_str[64]
    value: t.sequence[t.byte, 1024]


@final
@dataclass
class Request(IdlStruct, typename="wallance::Request"):
    requester: Octets32
    service: t.bounded_str[64]
    provider: Octets32
    price: t.uint64
    announce_seq: t.uint64
    contract_hash: Octets32
    time_ms: t.uint64
    version: t.uint64
    state: Octets32
    shares_upto: t.uint64
    received_upto: t.uint64
    params: t.sequence[Param, 255]
    nonce: t.uint64
    sig: Octets64


@final
@dataclass
class Vote(IdlStruct, typename="wallance::Vote"):
    voter: Octets32
    request_id: Octets32
    remaining: t.uint64
    nonce: t.uint64
    sig: Octets64


@final
@dataclass
class CertVote(IdlStruct, typename="wallance::CertVote"):
    voter_idx: t.uint32
    nonce: t.uint64
    sig: Octets64


@final
@dataclass
class Certificate(IdlStruct, typename="wallance::Certificate"):
    request: Request
    remaining: t.uint64
    votes: t.sequence[CertVote, 50000]
    provider_sig: Octets64


@final
@dataclass
class ServiceOffer(IdlStruct, typename="wallance::ServiceOffer"):
    name: t.bounded_str[64]
    price: t.uint64
    contract_hash: Octets32


@final
@dataclass
class Announce(IdlStruct, typename="wallance::Announce"):
    provider: Octets32
    seq: t.uint64
    services: t.sequence[ServiceOffer, 64]
    sig: Octets64


@final
@dataclass
class Outcome(IdlStruct, typename="wallance::Outcome"):
    provider: Octets32
    requester: Octets32
    request_id: Octets32
    version: t.uint64
    ok: bool
    body: t.sequence[t.byte, 4096]
    sig: Octets64


@final
@dataclass
class SyncDigest(IdlStruct, typename="wallance::SyncDigest"):
    from_id: Octets32
    time_ms: t.uint64
    digest: Octets32
    sig: Octets64


@final
@dataclass
class HeadsRequest(IdlStruct, typename="wallance::HeadsRequest"):
    from_id: Octets32
    to_id: Octets32
    time_ms: t.uint64
    sig: Octets64


@final
@dataclass
class Head(IdlStruct, typename="wallance::Head"):
    idx: t.uint32
    version: t.uint64
    settled: t.uint64
    shares: t.uint64
    received: t.uint64


@final
@dataclass
class Heads(IdlStruct, typename="wallance::Heads"):
    from_id: Octets32
    to_id: Octets32
    time_ms: t.uint64
    # IDL: sequence<Head, 200000>; the Python binding bounds at 65 536, and
    # the CDR of a bounded and an unbounded sequence is the same.
    heads: t.sequence[Head]
    sig: Octets64


@final
@dataclass
class CertFetch(IdlStruct, typename="wallance::CertFetch"):
    from_id: Octets32
    to_id: Octets32
    idx: t.uint32
    first_version: t.uint64
    last_version: t.uint64
    sig: Octets64


@final
@dataclass
class ShareFetch(IdlStruct, typename="wallance::ShareFetch"):
    from_id: Octets32
    to_id: Octets32
    first_seq: t.uint64
    last_seq: t.uint64
    sig: Octets64


# The two topics' sample types: a struct around a union switched on the
# member's index (a union at the top of a topic type would be keyed).
@final
class ConsensusMessage(IdlUnion, discriminator=t.uint32, typename="wallance::ConsensusMessage"):
    request: t.case[0, Request]
    vote: t.case[1, Vote]
    certificate: t.case[2, Certificate]


@final
@dataclass
class Consensus(IdlStruct, typename="wallance::Consensus"):
    msg: ConsensusMessage


@final
class SyncMessage(IdlUnion, discriminator=t.uint32, typename="wallance::SyncMessage"):
    announce: t.case[0, Announce]
    digest: t.case[1, SyncDigest]
    heads_request: t.case[2, HeadsRequest]
    heads: t.case[3, Heads]
    cert_fetch: t.case[4, CertFetch]
    share_fetch: t.case[5, ShareFetch]
    outcome: t.case[6, Outcome]
    share: t.case[7, Share]


@final
@dataclass
class Sync(IdlStruct, typename="wallance::Sync"):
    msg: SyncMessage
