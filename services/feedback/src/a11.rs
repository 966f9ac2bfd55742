//! The quarterly OMB Circular A-11 §280 customer experience data: answers
//! per scale point for each A-11 item, with the volumes, per touchpoint; and
//! its CSV form (the file `touchstone feedback export --a11` writes).

use crate::domain::{A11_ITEMS, Touchpoint};
use std::collections::BTreeMap;
use touchstone_api::common::v1::Channel;
use touchstone_api::feedback::v1 as pb;

type Key = (String, String, i32, String);

fn key(t: &Touchpoint) -> Key {
    (
        t.service.clone(),
        t.unit.clone(),
        t.channel,
        t.stage.clone(),
    )
}

/// Builds the report from answer counts (touchpoint, item, score, count) and
/// volumes (touchpoint, served, offered). Only the seven A-11 items count;
/// rows are ordered by touchpoint, then item.
pub fn report(
    parent: &str,
    quarter: &str,
    counts: &[(Touchpoint, i32, i32, i64)],
    volumes: &[(Touchpoint, i64, i64)],
) -> pb::A11Report {
    let mut table: BTreeMap<Key, BTreeMap<i32, [i64; 5]>> = BTreeMap::new();
    for (tp, item, score, n) in counts {
        if !A11_ITEMS.iter().any(|i| *i as i32 == *item) || !(1..=5).contains(score) {
            continue;
        }
        let cells = table.entry(key(tp)).or_default().entry(*item).or_default();
        cells[(*score - 1) as usize] += n;
    }
    let mut served: BTreeMap<Key, (i64, i64)> = BTreeMap::new();
    for (tp, s, o) in volumes {
        let e = served.entry(key(tp)).or_default();
        e.0 += s;
        e.1 += o;
    }
    let mut rows = Vec::new();
    for ((service, unit, channel, stage), items) in table {
        let (s, o) = served
            .get(&(service.clone(), unit.clone(), channel, stage.clone()))
            .copied()
            .unwrap_or_default();
        for (item, cells) in items {
            rows.push(pb::A11Row {
                touchpoint: Some(pb::Touchpoint {
                    service: service.clone(),
                    unit: unit.clone(),
                    channel,
                    stage: stage.clone(),
                }),
                item,
                counts: cells.to_vec(),
                customers_served: s,
                customers_offered: o,
            });
        }
    }
    pb::A11Report {
        parent: parent.to_string(),
        quarter: quarter.to_string(),
        rows,
    }
}

/// The CSV header of the A-11 file.
pub const CSV_HEADER: &str = "quarter,service,unit,channel,stage,item,responses,\
point_1,point_2,point_3,point_4,point_5,customers_served,customers_offered";

/// The short name of an A-11 item in the file, e.g. "satisfaction".
pub fn item_label(item: i32) -> String {
    pb::StandardItem::try_from(item)
        .map(|i| {
            i.as_str_name()
                .trim_start_matches("STANDARD_ITEM_A11_")
                .trim_start_matches("STANDARD_ITEM_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| item.to_string())
}

fn channel_label(channel: i32) -> String {
    Channel::try_from(channel)
        .map(|c| c.as_str_name().trim_start_matches("CHANNEL_").to_string())
        .unwrap_or_default()
        .replace("UNSPECIFIED", "")
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// The report as CSV: a header, then one line per row, "\n" line ends.
pub fn to_csv(report: &pb::A11Report) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for row in &report.rows {
        let tp = row.touchpoint.clone().unwrap_or_default();
        let total: i64 = row.counts.iter().sum();
        let mut fields = vec![
            quote(&report.quarter),
            quote(&tp.service),
            quote(&tp.unit),
            channel_label(tp.channel),
            quote(&tp.stage),
            item_label(row.item),
            total.to_string(),
        ];
        fields.extend(row.counts.iter().map(i64::to_string));
        fields.push(row.customers_served.to_string());
        fields.push(row.customers_offered.to_string());
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            item_label(pb::StandardItem::A11EmployeeHelpfulness as i32),
            "employee_helpfulness"
        );
        assert_eq!(
            item_label(pb::StandardItem::A11Satisfaction as i32),
            "satisfaction"
        );
        assert_eq!(channel_label(Channel::InPerson as i32), "IN_PERSON");
        assert_eq!(quote("a,b"), "\"a,b\"");
    }
}
