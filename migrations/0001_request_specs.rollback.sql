-- depends:
DROP TABLE IF EXISTS spec_locations;
DROP TABLE IF EXISTS request_specs;
