"""The downgrade story through a client generated from /openapi.json (`tests/e2e/contract.rs`).

Run as `python3 client_scenario.py BASE_URL TOKEN TENANT` with the generated package
`tierflow_client` on PYTHONPATH. Every step goes through the generated functions and reads the
generated models' typed fields (enums, nested models, unions), so a response that no longer
matches the document fails here: the model cannot parse it, or a field is missing or mistyped.
"""

import sys
import uuid
from http import HTTPStatus

from tierflow_client import AuthenticatedClient
from tierflow_client.api.tenants import get_entitlement, provision_tenant
from tierflow_client.api.transitions import cancel_transition, list_transitions, request_transition
from tierflow_client.models import (
    CancelBody,
    CancelOutcome,
    EffectiveEntitlement,
    EntitlementStatus,
    FeatureFromPlan,
    FeatureFromRestriction,
    HistoryPage,
    LimitFromPlan,
    JobKind,
    Problem,
    ProblemType,
    ProvisionBody,
    Restriction,
    TransitionBody,
    TransitionKind,
    TransitionOutcome,
    TransitionStatus,
)
from tierflow_client.types import UNSET

GRACE = 3600


def expect(response, status, model):
    """The parsed body of `response`, which must have `status` and parse as `model`."""
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, model), (type(response.parsed), response.content)
    return response.parsed


def feature(entitlement, name):
    return entitlement.features.additional_properties[name]


def main(base, token, tenant):
    # Generous timeouts: the test may run beside others on a busy machine.
    client = AuthenticatedClient(base_url=base, token=token, timeout=30.0, raise_on_unexpected_status=True)
    with client:
        # Provision on professional: voice on, from the plan.
        out = expect(
            provision_tenant.sync_detailed(
                client=client,
                body=ProvisionBody(tenant_id=tenant, tier_id="professional", reason="contract test"),
            ),
            HTTPStatus.CREATED,
            TransitionOutcome,
        )
        assert out.transition.kind is TransitionKind.PROVISION
        assert out.transition.status is TransitionStatus.EFFECTIVE
        assert out.entitlement.status is EntitlementStatus.ACTIVE
        voice = feature(out.entitlement, "voice")
        assert isinstance(voice, FeatureFromPlan) and voice.value is True, voice
        assert voice.tier_id == "professional"

        # A second provision of the same tenant is a typed problem.
        problem = expect(
            provision_tenant.sync_detailed(
                client=client, body=ProvisionBody(tenant_id=tenant, tier_id="starter")
            ),
            HTTPStatus.CONFLICT,
            Problem,
        )
        assert problem.type_ is ProblemType.STATE_CONFLICT, problem
        assert problem.status == 409

        # Downgrade to starter with an hour of grace: pending, restrictions on, jobs scheduled.
        key = f"contract-{uuid.uuid4()}"
        down = expect(
            request_transition.sync_detailed(
                tenant,
                client=client,
                body=TransitionBody(tier_id="starter", grace_seconds=GRACE, reason="renewal"),
                idempotency_key=key,
            ),
            HTTPStatus.CREATED,
            TransitionOutcome,
        )
        t = down.transition
        assert t.kind is TransitionKind.DOWNGRADE
        assert t.status is TransitionStatus.PENDING
        assert t.to_tier == "starter" and t.from_tier == "professional"
        assert (t.grace_ends_at - t.requested_at).total_seconds() == GRACE
        kinds = sorted(job.kind for job in down.jobs)
        assert kinds == sorted([JobKind.VOICE_DISABLE, JobKind.SLA_FREEZE, JobKind.APPLY_DOWNGRADE]), kinds
        assert down.replayed is False

        # The same key and body replays the first result.
        replay = request_transition.sync_detailed(
            tenant,
            client=client,
            body=TransitionBody(tier_id="starter", grace_seconds=GRACE, reason="renewal"),
            idempotency_key=key,
        )
        again = expect(replay, HTTPStatus.OK, TransitionOutcome)
        assert again.replayed is True and again.transition.id == t.id
        assert replay.headers["idempotent-replayed"] == "true"

        # Read the entitlement: still professional, the downgrade pending, voice off by it.
        ent = expect(get_entitlement.sync_detailed(tenant, client=client), HTTPStatus.OK, EffectiveEntitlement)
        assert ent.tier_id == "professional"
        assert ent.pending_downgrade is not None and ent.pending_downgrade is not UNSET
        assert ent.pending_downgrade.transition_id == t.id
        assert ent.pending_downgrade.to_tier == "starter"
        assert ent.restrictions.voice_disabled and ent.restrictions.sla_frozen
        voice = feature(ent, "voice")
        assert isinstance(voice, FeatureFromRestriction) and voice.value is False, voice
        assert voice.restriction is Restriction.VOICE_DISABLED
        assert voice.held_by == [f"downgrade:{t.id}"], voice.held_by
        sources = ent.restriction_sources.additional_properties
        assert sources["voice_disabled"] == [f"downgrade:{t.id}"], sources
        leads = ent.limits.additional_properties["leads"]
        assert isinstance(leads, LimitFromPlan) and leads.value == 10_000, leads

        # History: a typed page, newest first, with no cursor on the last page.
        page = expect(list_transitions.sync_detailed(tenant, client=client, limit=10), HTTPStatus.OK, HistoryPage)
        assert [item.kind for item in page.items] == [TransitionKind.DOWNGRADE, TransitionKind.PROVISION]
        assert page.next_cursor is UNSET

        # Cancel the downgrade: the tenant keeps professional, the restrictions are lifted.
        cancelled = expect(
            cancel_transition.sync_detailed(
                tenant, t.id, client=client, body=CancelBody(reason="customer stayed")
            ),
            HTTPStatus.OK,
            CancelOutcome,
        )
        assert cancelled.transition.status is TransitionStatus.CANCELLED
        assert len(cancelled.cancelled_jobs) >= 1
        after = cancelled.entitlement
        assert after.tier_id == "professional"
        assert after.pending_downgrade is None
        assert not after.restrictions.voice_disabled and not after.restrictions.sla_frozen
        voice = feature(after, "voice")
        assert isinstance(voice, FeatureFromPlan) and voice.value is True, voice

        # Cancelling again (with no body: JSON null) is a typed problem.
        problem = expect(
            cancel_transition.sync_detailed(tenant, t.id, client=client, body=None),
            HTTPStatus.CONFLICT,
            Problem,
        )
        assert problem.type_ is ProblemType.STATE_CONFLICT
    print("scenario passed")


if __name__ == "__main__":
    main(*sys.argv[1:4])
