"""Which callers may call which method: SPIRE's default policy (authpolicy/policy_data.json).

Every served method has a row, the unimplemented WIT-SVID ones too: a caller SPIRE would let
through gets UNIMPLEMENTED from them, not PERMISSION_DENIED (a method without a row is refused
to everyone, see authz.py). tests/integration/security/test_authorization_table.py checks
every served method against SPIRE's table for every kind of caller."""

from __future__ import annotations

from plastron.server.api.authz import Policy

A, L, D, AG, ANY = Policy.ADMIN, Policy.LOCAL, Policy.DOWNSTREAM, Policy.AGENT, Policy.ANY

_AGENT = "/spire.api.server.agent.v1.Agent/"
_BUNDLE = "/spire.api.server.bundle.v1.Bundle/"
_ENTRY = "/spire.api.server.entry.v1.Entry/"
_SVID = "/spire.api.server.svid.v1.SVID/"
_DEBUG = "/spire.api.server.debug.v1.Debug/"
_LOGGER = "/spire.api.server.logger.v1.Logger/"
_TD = "/spire.api.server.trustdomain.v1.TrustDomain/"
_LA = "/spire.api.server.localauthority.v1.LocalAuthority/"
_HEALTH = "/grpc.health.v1.Health/"
# Plastron's own (not SPIRE's): served only with server.agentless_exchange configured.
_EXCHANGE = "/plastron.agentless.v1.TokenExchange/"
# Plastron's own: entry changes pushed to agents (server/api/entrynotifier.py).
_NOTIFIER = "/plastron.entrynotifier.v1.EntryNotifier/"

POLICIES: dict[str, Policy] = {
    _AGENT + "CountAgents": A | L,
    _AGENT + "ListAgents": A | L,
    _AGENT + "GetAgent": A | L,
    _AGENT + "DeleteAgent": A | L,
    _AGENT + "BanAgent": A | L,
    _AGENT + "AttestAgent": ANY,
    _AGENT + "RenewAgent": AG,
    _AGENT + "CreateJoinToken": A | L,
    _AGENT + "PostStatus": AG,
    _BUNDLE + "GetBundle": ANY,
    _BUNDLE + "AppendBundle": A | L,
    _BUNDLE + "PublishJWTAuthority": D,
    _BUNDLE + "PublishWITAuthority": D,
    _BUNDLE + "CountBundles": A | L,
    _BUNDLE + "ListFederatedBundles": A | L,
    _BUNDLE + "GetFederatedBundle": A | L | AG,
    _BUNDLE + "BatchCreateFederatedBundle": A | L,
    _BUNDLE + "BatchUpdateFederatedBundle": A | L,
    _BUNDLE + "BatchSetFederatedBundle": A | L,
    _BUNDLE + "BatchDeleteFederatedBundle": A | L,
    _ENTRY + "CountEntries": A | L,
    _ENTRY + "ListEntries": A | L,
    _ENTRY + "GetEntry": A | L,
    _ENTRY + "BatchCreateEntry": A | L,
    _ENTRY + "BatchUpdateEntry": A | L,
    _ENTRY + "BatchDeleteEntry": A | L,
    _ENTRY + "GetAuthorizedEntries": AG,
    _ENTRY + "SyncAuthorizedEntries": AG,
    _SVID + "MintX509SVID": A | L,
    _SVID + "MintJWTSVID": A | L,
    _SVID + "MintWITSVID": A | L,
    _SVID + "BatchNewX509SVID": AG,
    _SVID + "NewJWTSVID": AG,
    _SVID + "BatchNewWITSVID": AG,
    _SVID + "NewDownstreamX509CA": D,
    _DEBUG + "GetInfo": L,
    _LOGGER + "GetLogger": L,
    _LOGGER + "SetLogLevel": L,
    _LOGGER + "ResetLogLevel": L,
    _TD + "ListFederationRelationships": A | L,
    _TD + "GetFederationRelationship": A | L,
    _TD + "BatchCreateFederationRelationship": A | L,
    _TD + "BatchUpdateFederationRelationship": A | L,
    _TD + "BatchDeleteFederationRelationship": A | L,
    _TD + "RefreshBundle": A | L,
    **{
        _LA + verb + kind: A | L
        for kind in ("JWTAuthority", "X509Authority", "WITAuthority")
        for verb in ("Prepare", "Activate", "Taint", "Revoke")
    },
    _LA + "GetJWTAuthorityState": A | L,
    _LA + "GetX509AuthorityState": A | L,
    _LA + "GetWITAuthorityState": A | L,
    _LA + "TaintX509UpstreamAuthority": A | L,
    _LA + "RevokeX509UpstreamAuthority": A | L,
    _HEALTH + "Check": L,
    _HEALTH + "Watch": L,
    _HEALTH + "List": L,
    _EXCHANGE + "Exchange": ANY,  # the platform credential is the proof
    _NOTIFIER + "Watch": AG,  # as SyncAuthorizedEntries, which the push asks the agent to call
}
