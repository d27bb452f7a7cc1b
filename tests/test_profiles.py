"""agent/profiles.py: the table's facts, topic building, validation, the idle-day estimate."""

from __future__ import annotations

import dataclasses

import pytest

from agent import config
from agent.errors import UsageError
from agent.profiles import (
    AWS_IOT_CORE,
    AZURE_IOT_HUB,
    HUB_ID_RE,
    IDLE_BYTES_PER_DAY_GOAL,
    MQTT,
    OUTBOUND,
    PROFILES,
    AckMode,
    MessageKind,
    MqttVersion,
    Publication,
    Subscription,
    UplinkProfile,
    idle_bytes_per_day,
    profile_named,
)

HUB = "hub-0001"


class TestTable:
    def test_names_select_their_profile(self) -> None:
        assert {name: profile_named(name) for name in PROFILES} == {
            "mqtt": MQTT,
            "azure_iot_hub": AZURE_IOT_HUB,
            "aws_iot_core": AWS_IOT_CORE,
        }

    def test_unknown_name_is_a_usage_error_naming_the_choices(self) -> None:
        with pytest.raises(UsageError) as caught:
            profile_named("azure")
        assert (caught.value.argument, caught.value.reason) == (
            "profile",
            "unknown profile 'azure'; one of 'mqtt', 'azure_iot_hub', 'aws_iot_core'",
        )

    def test_platform_facts(self) -> None:
        """The vendors' documented facts (sources in agent/profiles.py's docstring)."""
        facts = {
            p.name: (
                p.mqtt_version,
                p.qos_max,
                p.retain_available,
                p.max_message_bytes,
                p.max_payload_bytes,
                p.max_inbound_bytes,
                p.max_topic_bytes,
                p.max_topic_levels,
                (p.keepalive_min_s, p.keepalive_max_s),
                p.ack_default,
                p.session_expiry_s,
            )
            for p in PROFILES.values()
        }
        assert facts == {
            "mqtt": (
                MqttVersion.V5,
                2,
                True,
                1_048_576,
                1_047_552,
                1_047_552,
                None,
                None,
                (1, 65_535),
                AckMode.RECEIPT,
                3600,
            ),
            "azure_iot_hub": (
                MqttVersion.V311,
                1,
                False,
                256_000,
                254_976,
                64_000,
                None,
                None,
                (1, 1177),
                AckMode.PUBACK,
                None,
            ),
            "aws_iot_core": (
                MqttVersion.V5,
                1,
                True,
                128_000,
                128_000,
                128_000,
                256,
                8,
                (30, 1200),
                AckMode.RECEIPT,
                3600,
            ),
        }

    def test_every_profile_keeps_an_idle_day_within_the_goal(self) -> None:
        """900 s everywhere: 96 round trips of 204 bytes = 19,584 bytes (goal 30 KB); the
        baseline 60 s costs 293,760."""
        assert {p.name: idle_bytes_per_day(p.keepalive_s) for p in PROFILES.values()} == {
            "mqtt": 19_584.0,
            "azure_iot_hub": 19_584.0,
            "aws_iot_core": 19_584.0,
        }
        assert idle_bytes_per_day(60) == 293_760.0
        assert all(
            idle_bytes_per_day(p.keepalive_s) <= IDLE_BYTES_PER_DAY_GOAL for p in PROFILES.values()
        )
        assert idle_bytes_per_day(900, round_trip_ip_bytes=218) == 20_928.0

    def test_idle_estimate_refuses_a_keepalive_of_zero(self) -> None:
        with pytest.raises(UsageError, match="keepalive_s: must be > 0"):
            idle_bytes_per_day(0)

    def test_hub_id_allowlist_is_the_configurations(self) -> None:
        assert HUB_ID_RE.pattern == config.HUB_ID_RE.pattern

    def test_a_profile_contradicting_itself_is_refused(self) -> None:
        with pytest.raises(UsageError, match="keepalive_s: aws_iot_core: outside"):
            dataclasses.replace(AWS_IOT_CORE, keepalive_s=20)
        with pytest.raises(UsageError, match="will_retained: azure_iot_hub"):
            dataclasses.replace(AZURE_IOT_HUB, will_retained=True)
        with pytest.raises(UsageError, match="max_payload_bytes: mqtt"):
            dataclasses.replace(MQTT, max_payload_bytes=MQTT.max_message_bytes + 1)


class TestTopics:
    @pytest.mark.parametrize("profile", [MQTT, AWS_IOT_CORE], ids=lambda p: p.name)
    def test_homehub_topics(self, profile: UplinkProfile) -> None:
        p = profile
        assert {k.value: p.publication(HUB, k) for k in OUTBOUND} == {
            "readings": Publication("homehub/v1/hub-0001/readings", 1, False),
            "replies": Publication("homehub/v1/hub-0001/replies", 1, False),
            "status": Publication("homehub/v1/hub-0001/status", 1, True),
            "events": Publication("homehub/v1/hub-0001/events", 1, False),
        }
        assert p.subscriptions(HUB) == (
            Subscription("homehub/v1/hub-0001/receipts", 1),
            Subscription("homehub/v1/hub-0001/commands", 1),
        )
        assert p.last_will(HUB) == Publication("homehub/v1/hub-0001/status", 1, True)
        assert (p.client_id(HUB), p.username(HUB, "broker.example")) == (HUB, None)

    def test_azure_topics_carry_kind_and_content_type_in_the_property_bag(self) -> None:
        events = "devices/hub-0001/messages/events/$.ct=application%2Fcose&homehub-kind="
        assert [AZURE_IOT_HUB.publication(HUB, k) for k in OUTBOUND] == [
            Publication(events + "readings", 1, False),
            Publication(events + "replies", 1, False),
            Publication(events + "status", 1, False),
            Publication(events + "events", 1, False),
        ]
        assert AZURE_IOT_HUB.last_will(HUB) == Publication(events + "status", 1, False)
        assert AZURE_IOT_HUB.subscriptions(HUB) == (
            Subscription("devices/hub-0001/messages/devicebound/#", 1),
        )
        assert AZURE_IOT_HUB.client_id(HUB) == HUB
        assert AZURE_IOT_HUB.username(HUB, "contoso.azure-devices.net") == (
            "contoso.azure-devices.net/hub-0001/?api-version=2021-04-12"
        )

    def test_azure_needs_the_hub_host_name_for_the_user_name(self) -> None:
        for host in ("", "contoso.azure-devices.net/x"):
            with pytest.raises(UsageError, match="host: azure_iot_hub"):
                AZURE_IOT_HUB.username(HUB, host)

    @pytest.mark.parametrize(
        ("topic", "kind"),
        [
            ("devices/hub-0001/messages/devicebound/homehub-kind=receipts", MessageKind.RECEIPTS),
            (
                "devices/hub-0001/messages/devicebound/%24.mid=7&%24.to=%2Fdevices%2Fhub-0001"
                "%2Fmessages%2FdeviceBound&homehub-kind=commands",
                MessageKind.COMMANDS,
            ),
            ("devices/hub-0001/messages/devicebound/?homehub-kind=receipts", MessageKind.RECEIPTS),
            ("devices/hub-0001/messages/devicebound/", None),
            ("devices/hub-0001/messages/devicebound/homehub-kind=readings", None),
            ("devices/hub-0002/messages/devicebound/homehub-kind=receipts", None),
            ("homehub/v1/hub-0001/receipts", None),
        ],
    )
    def test_azure_inbound_kind_from_the_property_bag(
        self, topic: str, kind: MessageKind | None
    ) -> None:
        assert AZURE_IOT_HUB.inbound_kind(HUB, topic) == kind

    def test_homehub_inbound_kind_from_the_topic(self) -> None:
        assert [
            MQTT.inbound_kind(HUB, t)
            for t in (
                "homehub/v1/hub-0001/receipts",
                "homehub/v1/hub-0001/commands",
                "homehub/v1/hub-0001/readings",
                "homehub/v1/hub-0002/receipts",
            )
        ] == [MessageKind.RECEIPTS, MessageKind.COMMANDS, None, None]

    def test_inbound_kinds_are_not_published_by_the_hub(self) -> None:
        for profile in PROFILES.values():
            with pytest.raises(UsageError, match="kind: receipts is sent by the platform"):
                profile.publication(HUB, MessageKind.RECEIPTS)


class TestValidation:
    @pytest.mark.parametrize(
        "hub_id", ["", "Hub-1", "-hub", "hub/1", "hub+1", "hub#", "a" * 64, "$hub"]
    )
    def test_bad_hub_ids_are_usage_errors(self, hub_id: str) -> None:
        for profile in PROFILES.values():
            with pytest.raises(UsageError, match=r"hub_id: must match"):
                profile.publication(hub_id, MessageKind.READINGS)

    def test_longest_hub_id_fits_every_profile(self) -> None:
        hub_id = "h" * 63
        for profile in PROFILES.values():
            profile.check_hub_id(hub_id)
        assert len(AWS_IOT_CORE.publication(hub_id, MessageKind.READINGS).topic) == 83

    def test_topic_limits_name_the_profile_and_the_limit(self) -> None:
        tight = dataclasses.replace(AWS_IOT_CORE, max_topic_bytes=27)
        with pytest.raises(UsageError) as caught:
            tight.publication(HUB, MessageKind.READINGS)
        assert str(caught.value) == "topic: aws_iot_core: 28 bytes, the limit is 27"
        with pytest.raises(UsageError, match="topic: aws_iot_core: 9 levels, the limit is 8"):
            AWS_IOT_CORE.check_topic("a/b/c/d/e/f/g/h/i")
        AWS_IOT_CORE.check_topic("a/b/c/d/e/f/g/h")

    def test_client_id_limit(self) -> None:
        short = dataclasses.replace(AZURE_IOT_HUB, max_client_id_bytes=7)
        with pytest.raises(UsageError, match="hub_id: azure_iot_hub: a client id is at most 7"):
            short.client_id(HUB)

    @pytest.mark.parametrize(
        ("profile", "good", "bad"),
        [
            (MQTT, (1, 900, 65_535), (0, 65_536)),
            (AZURE_IOT_HUB, (1, 900, 1177), (0, 1178)),
            (AWS_IOT_CORE, (30, 900, 1200), (29, 1201)),
        ],
        ids=lambda v: getattr(v, "name", ""),
    )
    def test_keepalive_bounds(
        self, profile: UplinkProfile, good: tuple[int, ...], bad: tuple[int, ...]
    ) -> None:
        p = profile
        for keepalive_s in good:
            p.check_keepalive(keepalive_s)
        for keepalive_s in bad:
            with pytest.raises(UsageError, match=f"keepalive_s: {p.name}: must be"):
                p.check_keepalive(keepalive_s)

    def test_payload_limit(self) -> None:
        AWS_IOT_CORE.check_payload(128_000)
        with pytest.raises(UsageError) as caught:
            AWS_IOT_CORE.check_payload(128_001)
        assert str(caught.value) == "payload: aws_iot_core: 128001 bytes, the limit is 128000"
