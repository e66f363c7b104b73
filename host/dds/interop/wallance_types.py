"""Python mirror of host/dds/idl/wallance.idl for Eclipse Cyclone DDS (`cyclonedds`).

Written by hand from the IDL only (no Rust knowledge), the way another vendor
would; every struct @final, written as XCDR1 (see DATA_REPRESENTATION).
"""

from dataclasses import dataclass

import cyclonedds.idl.types as t
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final, key

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
    requester: Octets32
    key("requester")
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
