"""The handbook protocol, checked against a transcription of the handbook's own code."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

from models.fraud.protocol import card_precision_at_k, day_of, filtered_test_rows


def handbook_test_set(transactions_df, start_date_training, delta_train=7, delta_delay=7, delta_test=7):
    """``get_train_test_set`` of the handbook (chapter 3), test part, as published."""
    train_df = transactions_df[(transactions_df.TX_DATETIME >= start_date_training) &
                               (transactions_df.TX_DATETIME < start_date_training + datetime.timedelta(days=delta_train))]
    test_df = []
    known_defrauded_customers = set(train_df[train_df.TX_FRAUD == 1].CUSTOMER_ID)
    start_tx_time_days_training = train_df.TX_TIME_DAYS.min()
    for day in range(delta_test):
        test_df_day = transactions_df[transactions_df.TX_TIME_DAYS == start_tx_time_days_training +
                                      delta_train + delta_delay + day]
        test_df_day_delay_period = transactions_df[transactions_df.TX_TIME_DAYS == start_tx_time_days_training +
                                                   delta_train + day - 1]
        new_defrauded_customers = set(test_df_day_delay_period[test_df_day_delay_period.TX_FRAUD == 1].CUSTOMER_ID)
        known_defrauded_customers = known_defrauded_customers.union(new_defrauded_customers)
        test_df_day = test_df_day[~test_df_day.CUSTOMER_ID.isin(known_defrauded_customers)]
        test_df.append(test_df_day)
    return pd.concat(test_df)


def handbook_card_precision_top_k(predictions_df, top_k):
    """``card_precision_top_k`` of the handbook (chapter 4), as published."""
    list_days = sorted(predictions_df['TX_TIME_DAYS'].unique())
    list_detected_compromised_cards = []
    card_precision_top_k_per_day_list = []
    for day in list_days:
        df_day = predictions_df[predictions_df['TX_TIME_DAYS'] == day]
        df_day = df_day[['predictions', 'CUSTOMER_ID', 'TX_FRAUD']]
        df_day = df_day[~df_day.CUSTOMER_ID.isin(list_detected_compromised_cards)]
        df_day = df_day.groupby('CUSTOMER_ID').max().sort_values(by="predictions", ascending=False).reset_index(drop=False)
        df_day_top_k = df_day.head(top_k)
        detected = list(df_day_top_k[df_day_top_k.TX_FRAUD == 1].CUSTOMER_ID)
        card_precision_top_k_per_day_list.append(len(detected) / top_k)
        list_detected_compromised_cards.extend(detected)
    return card_precision_top_k_per_day_list, np.array(card_precision_top_k_per_day_list).mean()


@pytest.fixture(scope="module")
def world() -> pd.DataFrame:
    """30 days, 300 cards, frauds clustered on some cards (as compromised cards are)."""
    rng = np.random.default_rng(4)
    n = 30_000
    start = pd.Timestamp("2018-04-01")
    seconds = np.sort(rng.uniform(0, 30 * 86400, n))
    card = rng.integers(0, 300, n)
    bad_cards = rng.choice(300, 40, replace=False)
    fraud = (np.isin(card, bad_cards) & (rng.random(n) < 0.08)) | (rng.random(n) < 0.002)
    df = pd.DataFrame({
        "TX_DATETIME": start + pd.to_timedelta(seconds, unit="s"),
        "CUSTOMER_ID": card,
        "TX_FRAUD": fraud.astype(int),
        "predictions": np.round(rng.random(n) * 0.5 + 0.5 * fraud * rng.random(n), 3),  # ties on purpose
    })
    df["TX_TIME_DAYS"] = (df.TX_DATETIME - start).dt.days
    df["ts"] = (df.TX_DATETIME - pd.Timestamp("1970-01-01")).dt.total_seconds()
    return df


def test_test_set_is_the_handbooks(world) -> None:
    train_start = pd.Timestamp("2018-04-10")
    expected = handbook_test_set(world, train_start)
    day = day_of(world["ts"].to_numpy())
    first_test = int(day_of(np.array([(train_start + pd.Timedelta(days=14) - pd.Timestamp("1970-01-01"))
                                      .total_seconds()]))[0])
    mask = filtered_test_rows(day, world["CUSTOMER_ID"].to_numpy(), world["TX_FRAUD"].to_numpy(), first_test, first_test + 6,
                     delay_days=7)
    assert mask.sum() > 1000
    assert world.index[mask].tolist() == expected.index.tolist()


def test_card_precision_is_the_handbooks(world) -> None:
    test = handbook_test_set(world, pd.Timestamp("2018-04-10"))
    for k in (10, 100):
        per_day, mean = handbook_card_precision_top_k(test, k)
        got_mean, got_per_day = card_precision_at_k(day_of(test["ts"].to_numpy()), test["CUSTOMER_ID"].to_numpy(),
                                                    test["TX_FRAUD"].to_numpy(), test["predictions"].to_numpy(), k=k)
        assert got_per_day == pytest.approx(per_day)
        assert got_mean == pytest.approx(mean)
        assert 0 < mean < 1
